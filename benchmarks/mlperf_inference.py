"""MLPerf Inference Datacenter, Llama 2 70B, Offline: the published rows as serving cases.

The rows live in ``benchmarks/serving_cases.yaml`` under ``mlperf_inference:`` (each with the
submission's own files as its source); :func:`load_cases` turns them into the
:class:`validate_serving.Case` form that ``validate_serving.py`` runs like every other serving
row (``--only mlperf_llama2_70b_offline``). Nothing here is fitted.

How a row becomes a case (the workload is the benchmark's; the engine settings the submitter's):

- Offline: every sample is queued at t = 0 and served by in-flight batching (continuous
  batching) under the engine profile of the submitter's stack (``trtllm`` for NVIDIA's
  TensorRT-LLM harness, ``vllm`` for AMD's vLLM on ROCm) with the row's own batch, token-budget,
  chunking and KV-memory settings from its configuration file.
- The system's ``gpus`` GPUs are ``gpus / tp`` identical replicas (MLPerf's harnesses spread the
  samples over them); one replica is simulated with ``requests_per_replica`` requests and its
  generated-token rate is multiplied by the number of replicas (``Case.replicas``).
- Lengths: every request has the dataset's mean input length (the sum of the 24,576 input
  token counts over 24,576) and the row's own mean generated length, its
  ``tokens_per_s / samples_per_s`` (the tokens per sample of that very run: MLPerf counts only
  the tokens the model generated, up to its end-of-sequence token). ``python
  benchmarks/mlperf_inference.py`` reruns the rows with the dataset's per-sample length
  distribution instead (:func:`dataset_run`; the percentiles in the cases file).
"""

from __future__ import annotations

from typing import Any

import validate_serving as vs

SECTION = "mlperf_inference"
"""The key of ``serving_cases.yaml`` that holds the MLPerf Inference families."""


def section(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = spec or vs.load_spec()
    return spec.get(SECTION) or {}


def families(spec: dict[str, Any] | None = None) -> list[str]:
    return list((section(spec).get("families") or {}).keys())


def dataset_means(spec: dict[str, Any] | None = None) -> tuple[float, float]:
    """The dataset's mean input tokens and mean reference-output tokens per sample."""
    d = section(spec)["dataset"]
    n = d["samples"]
    return d["input_tokens"]["sum"] / n, d["reference_output_tokens"]["sum"] / n


def output_len(row: dict[str, Any]) -> int:
    """The row's own generated tokens per sample (its tokens/s over its samples/s)."""
    return round(row["tokens_per_s"] / row["samples_per_s"])


def _source(sec: dict[str, Any], row: dict[str, Any]) -> str:
    return f"MLPerf Inference {row['round']}: {sec['repos'][row['round']]}, {row['path']}"


def case_id(family: str, row: dict[str, Any]) -> str:
    return (f"{family} {row['round']} {row['system']} {row['gpus']}x tp{row['tp']} "
            f"{row['precision']}")


def load_cases(spec: dict[str, Any] | None = None, only: Any = None) -> list[vs.Case]:
    """One :class:`validate_serving.Case` per published row of each family (in *only*)."""
    sec = section(spec)
    if not sec:
        return []
    mean_in, _ = dataset_means(spec)
    per_replica = int(sec["requests_per_replica"])
    out = []
    for name, fam in (sec.get("families") or {}).items():
        if only is not None and name not in set(only):
            continue
        for row in fam["rows"]:
            if row["gpus"] % row["tp"]:
                raise ValueError(f"{vs.CASES_FILE}: {SECTION}.families.{name}: {row['system']}: "
                                 f"gpus {row['gpus']} is not a multiple of tp {row['tp']}")
            sched = dict(row.get("scheduler") or {})
            out.append(vs.Case(
                family=name, id=case_id(name, row), metric=fam["metric"],
                published=float(row["tokens_per_s"]), source=_source(sec, row),
                model="llama2-70b", tp=int(row["tp"]),
                batch=int(sched.get("max_batch_size", 0)),
                input_len=round(mean_in), output_len=output_len(row),
                preset=fam["model"]["preset"], engine=row["engine"], gpu=row["gpu"],
                intra_node=row["intra_node"], precision=row["precision"],
                kv_precision=row.get("kv_precision"),
                weight_precision=row.get("weight_precision"), batching="inflight",
                requests=per_replica, scheduler=sched, per_gpu=False,
                replicas=row["gpus"] // row["tp"]))
    return out


def apart_rows(spec: dict[str, Any] | None = None, only: Any = None) -> list[vs.Row]:
    """The published rows reported apart (not simulated), each with its reason."""
    sec = section(spec)
    out = []
    for name, fam in (sec.get("families") or {}).items():
        if only is not None and name not in set(only):
            continue
        for row in fam.get("apart") or []:
            out.append(vs.Row(f"{name} {row['round']} {row['system']} {row['gpus']}x "
                              f"{row['precision']}", name, fam["metric"],
                              float(row["tokens_per_s"]), role="apart", note=row["reason"]))
    return out


def dataset_lengths(rng: Any, n: int, key: str, mean: float | None = None) -> Any:
    """*n* integer token counts drawn from the dataset's distribution of *key*
    (``input_percentiles`` or ``reference_output_percentiles`` of ``dataset``: inverse-CDF
    sampling, linear between percentiles). With *mean*, the draws are rescaled to that mean
    (the row's own generated tokens per sample: Llama 2 generates longer answers than the
    dataset's GPT-4 references) and kept within 1 .. ``seqlen_limit - 1``."""
    import numpy as np

    d = section()["dataset"]
    q = np.asarray(d[key], dtype=float)
    x = np.interp(rng.uniform(0.0, 100.0, n), np.arange(len(q)) * 100.0 / (len(q) - 1), q)
    if mean is not None:
        hi = d["seqlen_limit"] - 1
        for _ in range(20):        # clipping moves the mean: rescale until it holds
            x = np.clip(x * mean / x.mean(), 1, hi)
    return np.maximum(np.round(x), 1).astype(int)


def dataset_run(case: vs.Case, seed: int = 0) -> float:
    """The case's metric with the dataset's length distribution (:func:`dataset_lengths`:
    inputs as the dataset's, outputs its references' shape at the row's own mean) instead of
    every request at the means."""
    import tempfile

    import hwsim
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="hwsim-mlperf-") as folder:
        scen = vs.scenario_for(case, folder)
        pd.DataFrame({"arrival_s": 0.0,
                      "prompt_tokens": dataset_lengths(rng, case.requests, "input_percentiles"),
                      "output_tokens": dataset_lengths(rng, case.requests,
                                                       "reference_output_percentiles",
                                                       case.output_len)},
                     ).to_csv(scen["workload"]["arrivals"]["trace"], index=False)
        return vs.metric_of(case, hwsim.run(scen).requests)


SERVER_REQUESTS = 6000
"""Requests per replica of a Server run: about 130 s of arrivals at a B200 replica's rate, with
60 requests beyond each run's 99th percentile."""


def server_rows(spec: dict[str, Any] | None = None) -> list[tuple[vs.Case, dict[str, Any]]]:
    """``(case, server)`` of every row with a ``server:`` entry: the Offline case (engine,
    hardware, precision, one replica) and the row's Server figures and settings."""
    sec = section(spec)
    cases = {c.id: c for c in load_cases(spec)}
    return [(cases[case_id(name, row)], row["server"])
            for name, fam in (sec.get("families") or {}).items()
            for row in fam["rows"] if row.get("server")]


def _server_scenario(case: vs.Case, server: dict[str, Any], folder: str) -> dict[str, Any]:
    """The Offline case's scenario under the Server configuration's scheduler. The event budget
    estimates a low-load run at one sequence per iteration; these runs fast-forward decoding
    (seconds each), so the estimate does not apply and the limit is raised."""
    scen = vs.scenario_for(case, folder)
    scen["limits"] = {"max_events": 100_000_000}
    scen["workload"]["scheduler"].update(server.get("scheduler") or {})
    return scen


def server_run(case: vs.Case, server: dict[str, Any], seed: int = 0,
               requests: int = SERVER_REQUESTS) -> dict[str, float]:
    """One replica of a Server row at its published rate: Poisson arrivals at the completed
    samples per second over the replicas, each request's input and output drawn from the
    dataset (:func:`dataset_lengths`, outputs at the Offline row's tokens per sample), under the
    Server configuration's scheduler (over the Offline row's). Returns the 99th percentiles of
    TTFT and TPOT (ms) over the completed requests, as MLPerf's summary reports them, and the
    completed samples per second over the replica's run."""
    import tempfile

    import hwsim
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    rate = float(server["samples_per_s"]) / case.replicas
    with tempfile.TemporaryDirectory(prefix="hwsim-mlperf-server-") as folder:
        scen = _server_scenario(case, server, folder)
        pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(1.0 / rate, requests)),
                      "prompt_tokens": dataset_lengths(rng, requests, "input_percentiles"),
                      "output_tokens": dataset_lengths(rng, requests,
                                                       "reference_output_percentiles",
                                                       case.output_len)},
                     ).to_csv(scen["workload"]["arrivals"]["trace"], index=False)
        req = hwsim.run(scen).requests
    done = req[np.isfinite(req["end_s"])]
    span = float(done["end_s"].max() - req["arrival_s"].min())
    return {"ttft_p99_ms": float(np.percentile(done["ttft_s"], 99)) * 1e3,
            "tpot_p99_ms": float(np.percentile(done["tpot_s"].dropna(), 99)) * 1e3,
            "completed_per_s": len(done) / span * case.replicas, "completed": len(done)}


def _quantiles(key: str, mean: float | None = None, n: int = 1000) -> list[int]:
    """*n* evenly spaced quantiles of the dataset's distribution of *key* (as
    :func:`dataset_lengths` draws them, rescaled to *mean* likewise): a ``choice`` distribution
    for a scenario's token counts."""
    import numpy as np

    d = section()["dataset"]
    q = np.asarray(d[key], dtype=float)
    x = np.interp((np.arange(n) + 0.5) * 100.0 / n, np.arange(len(q)) * 100.0 / (len(q) - 1), q)
    if mean is not None:
        for _ in range(20):
            x = np.clip(x * mean / x.mean(), 1, d["seqlen_limit"] - 1)
    return [int(v) for v in np.maximum(np.round(x), 1)]


def server_max_rate(case: vs.Case, server: dict[str, Any],
                    requests: int = SERVER_REQUESTS) -> Any:
    """The highest Poisson rate per replica (:func:`hwsim.planning.saturation.max_rate`, to 2 %)
    at which the replica's p99 TPOT is within the row's published p99 TPOT and its p99 TTFT
    within MLPerf's 2 s, lengths as :func:`server_run` draws them (``choice`` of the dataset's
    quantiles), under the Server scheduler: the throughput hwsim gives at the latency the
    submission measured."""
    import tempfile

    import hwsim
    from hwsim.planning.saturation import max_rate

    with tempfile.TemporaryDirectory(prefix="hwsim-mlperf-server-") as folder:
        base = _server_scenario(case, server, folder)
    base["workload"]["arrivals"] = {"process": "poisson", "requests": requests,
                     "rate_per_s": float(server["samples_per_s"]) / case.replicas,
                     "prompt_tokens": {"dist": "choice",
                                       "values": _quantiles("input_percentiles")},
                     "output_tokens": {"dist": "choice",
                                       "values": _quantiles("reference_output_percentiles",
                                                            case.output_len)}}
    return max_rate(hwsim.run, base, ttft_s=2.0, tpot_s=float(server["tpot_p99_ms"]) / 1e3,
                    percentile=99, rel_tol=0.02)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Sensitivity of the MLPerf rows to the request "
                                 "lengths: each row's error with the dataset's per-sample "
                                 "length distribution (at the means, the validation table: "
                                 "validate_serving.py --only mlperf_llama2_70b_offline)")
    ap.add_argument("--systems", nargs="*", default=[], help="substrings of the systems to run")
    ap.add_argument("--server", action="store_true",
                    help="the Server rows instead: p99 TTFT and TPOT at the published rate")
    args = ap.parse_args(argv)
    if args.server:
        print("| system | published samples/s | its p99 TTFT / TPOT ms | hwsim at that rate: p99 "
              "TTFT / TPOT ms | hwsim's rate at the published p99 TPOT (TTFT <= 2 s) | error | "
              "limited by |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for c, srv in server_rows():
            if args.systems and not any(x in c.id for x in args.systems):
                continue
            r = server_run(c, srv)
            m = server_max_rate(c, srv)
            rate = None if m.rate_per_s is None else m.rate_per_s * c.replicas
            err = "-" if rate is None else f"{100 * (rate / srv['samples_per_s'] - 1):+.1f} %"
            print(f"| {c.id.split()[2]} | {srv['samples_per_s']:,} | {srv['ttft_p99_ms']:,.0f} / "
                  f"{srv['tpot_p99_ms']:.1f} | {r['ttft_p99_ms']:,.0f} / {r['tpot_p99_ms']:.1f} | "
                  f"{'-' if rate is None else f'{rate:,.1f}'} | {err} | "
                  f"{m.limited_by if rate is not None else m.reason} |", flush=True)
        return 0
    for c in load_cases():
        if args.systems and not any(s in c.id for s in args.systems):
            continue
        print(f"{c.id}: dataset lengths {100 * (dataset_run(c) / c.published - 1):+.1f} %",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
