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


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Sensitivity of the MLPerf rows to the request "
                                 "lengths: each row's error with the dataset's per-sample "
                                 "length distribution (at the means, the validation table: "
                                 "validate_serving.py --only mlperf_llama2_70b_offline)")
    ap.add_argument("--systems", nargs="*", default=[], help="substrings of the systems to run")
    args = ap.parse_args(argv)
    for c in load_cases():
        if args.systems and not any(s in c.id for s in args.systems):
            continue
        print(f"{c.id}: dataset lengths {100 * (dataset_run(c) / c.published - 1):+.1f} %",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
