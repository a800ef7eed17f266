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
- Lengths: the dataset's documented statistics, not its per-sample lengths (which no source
  retrieved publishes): every request has the dataset's mean input length (the sum of the
  24,576 input token counts over 24,576) and the row's own mean generated length, its
  ``tokens_per_s / samples_per_s`` (the tokens per sample of that very run: MLPerf counts only
  the tokens the model generated, up to its end-of-sequence token).
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
