"""Validation report: accelerators a single drive sustains in MLPerf Storage (DLIO), hwsim against
the published Micron results.

Usage::

    python benchmarks/validate_storage.py [--markdown]

Every row of ``benchmarks/storage_cases.yaml`` (copied from ``../shared/data/calibration.yaml``,
``storage_dlio_single_drive``) becomes one ``kind: dataloader`` scenario (:func:`scenario_for`);
:func:`sustained` finds the largest accelerator count whose simulated accelerator utilization is
at least the benchmark's 90 % by bisection. The table has: case, published, predicted, error
(predicted / published - 1) and whether the prediction is within one accelerator or 15 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report helpers next to this file
import report_table  # noqa: E402

CASES_FILE = Path(__file__).resolve().parent / "storage_cases.yaml"
STEPS_PER_OUTSTANDING = 4
"""Steps simulated per batch a rank keeps outstanding (workers x prefetch): the summary's
steady state is the second half, well after the prefetch queues have filled."""


@dataclass
class Case:
    id: str
    drive: str                  # catalog id
    workload: str               # unet3d | resnet50
    computation_time_s: float
    published: int


def load_spec(path: Path = CASES_FILE) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


def load_cases(spec: dict[str, Any] | None = None) -> list[Case]:
    spec = spec or load_spec()
    cases = []
    for row in spec["rows"]:
        r = dict(zip(spec["columns"], row))
        w = spec[f"workload_{r['workload']}"]
        cases.append(Case(f"{r['drive']} {r['workload']} {r['accelerator']}",
                          spec["drives"][r["drive"]], r["workload"],
                          w[f"computation_time_s_{r['accelerator'].lower()}"], r["accelerators"]))
    return cases


def scenario_for(case: Case, accelerators: int, spec: dict[str, Any] | None = None,
                 warm: bool = False) -> dict[str, Any]:
    """The ``kind: dataloader`` scenario of *case* with *accelerators* emulated accelerators: a
    cold epoch (no page cache), or with *warm* two epochs of a dataset ``dataset_to_host_memory``
    times the page cache, so the steady half is an epoch whose reads partly hit the cache."""
    spec = spec or load_spec()
    w = spec[f"workload_{case.workload}"]
    sample = w.get("sample_bytes", w.get("sample_bytes_mean"))
    per_file = w["samples_per_file"]
    steps = STEPS_PER_OUTSTANDING * 2 * spec["read_threads"][case.workload]
    data = {"storage": "local", "samples": 1024 * per_file, "sample_bytes": sample,
            "samples_per_file": per_file, "workers": spec["read_threads"][case.workload],
            "page_cache": False}
    if warm:  # epoch 1 = the first half of the steps, epoch 2 = the measured half
        samples = accelerators * w["batch"] * steps // 2
        data.update(samples=samples, page_cache=True,
                    page_cache_bytes=samples * sample / spec["dataset_to_host_memory"])
    return {
        "name": case.id.replace(" ", "_"), "seed": 0, "description": spec["source"],
        "cluster": {"nodes": 1, "node": {**spec["host"], "local_storage": case.drive}},
        "workload": {
            "kind": "dataloader", "accelerators": accelerators, "batch": w["batch"],
            "computation_time": case.computation_time_s,
            "steps": steps, "data": data},
        "outputs": {"events": False, "utilization": False, "trace": False}}


def utilization(case: Case, accelerators: int, spec: dict[str, Any] | None = None) -> float:
    """AU over the benchmark's epochs: the first cold, the others with the page cache's share."""
    import hwsim

    spec = spec or load_spec()
    au = [hwsim.run(scenario_for(case, accelerators, spec, warm=w)).summary[
        "accelerator_utilization"] for w in (False, True)]
    return (au[0] + (spec["epochs"] - 1) * au[1]) / spec["epochs"]


def sustained(case: Case, spec: dict[str, Any] | None = None) -> int:
    """The largest accelerator count with AU >= the target (AU falls as accelerators are added:
    doubling then bisection); 0 when even one accelerator misses it."""
    spec = spec or load_spec()
    target = spec["au_target"]
    ok = lambda n: utilization(case, n, spec) >= target  # noqa: E731
    if not ok(1):
        return 0
    lo, hi = 1, 2
    while ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def within(predicted: int, published: int, spec: dict[str, Any] | None = None) -> bool:
    tol = (spec or load_spec())["tolerance"]
    return (abs(predicted - published) <= tol["accelerators"]
            or abs(predicted / published - 1) <= tol["relative"])


def report(spec: dict[str, Any] | None = None) -> list[report_table.Row]:
    spec = spec or load_spec()
    rows = []
    for c in load_cases(spec):
        t = time.perf_counter()
        n = sustained(c, spec)
        rows.append(report_table.Row(c.id, "dlio", "accelerators", c.published, n,
                                     n / c.published - 1,
                                     note="within" if within(n, c.published, spec) else "OUTSIDE",
                                     wall_s=time.perf_counter() - t))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    rows = report()
    body = [[r.case, f"{r.published:.0f}", f"{r.predicted:.0f}", f"{100 * r.error:+.1f}",
             r.note, f"{r.wall_s:.1f}"] for r in rows]
    lines = report_table.table(["case", "published", "predicted", "error %",
                                "one accelerator or 15 %", "sim s"], body, args.markdown,
                               {0, 4})
    ok = sum(r.note == "within" for r in rows)
    print("\n".join(lines + ["", f"{ok} of {len(rows)} cases within one accelerator or 15 %."]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
