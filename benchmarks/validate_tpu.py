"""Validation report: TPU training throughput, hwsim against MaxText's published tables.

Usage::

    python benchmarks/validate_tpu.py [--markdown]

Every row of ``benchmarks/tpu_cases.yaml`` becomes a training scenario on its TPU slice
(:func:`scenario_for`: FSDP over every chip, one sequence a chip, the least recomputation that
fits, :func:`predict`); the table has the published and predicted tokens per second per device,
the error (predicted / published - 1), the recomputation chosen and the memory it needs. Nothing
is fitted to these rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report helpers next to this file
import report_table  # noqa: E402

CASES_FILE = Path(__file__).resolve().parent / "tpu_cases.yaml"
RECOMPUTE = ("none", "selective", "full")
WITHIN = 0.15


@dataclass
class Case:
    id: str
    system: dict[str, Any]
    model: str
    seq_len: int
    published: float
    mfu: float


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    spec = yaml.safe_load(path.read_text())
    cols = spec["columns"]
    out = []
    for raw in spec["rows"]:
        r = dict(zip(cols, raw))
        out.append(Case(f"{r['system']} {r['model']} sl{r['seq_len']}", spec["systems"][r["system"]],
                        r["model"], r["seq_len"], float(r["value"]), float(r["mfu"])))
    return out


def scenario_for(case: Case, recompute: str) -> dict[str, Any]:
    s = case.system
    chips = prod(s["dims"])
    return {"name": case.id.replace(" ", "-"), "seed": 0,
            "cluster": {"nodes": chips // s["chips_per_host"],
                        "node": {"tpu": s["tpu"], "gpus_per_node": s["chips_per_host"]},
                        "fabric": {"topology": "torus", "dims": s["dims"], "link": s["ici"]}},
            "workload": {"kind": "training", "model": {"preset": case.model},
                         "seq_len": case.seq_len, "precision": "bf16", "global_batch": chips,
                         "optimizer": "adamw", "steps": 2,
                         "parallelism": {"micro_batch": 1, "zero": 3, "recompute": recompute}},
            "outputs": {"record": "summary"}}


def predict(case: Case) -> tuple[float | None, str, dict[str, Any]]:
    """Tokens per second per chip with the least recomputation that fits (None if none fits),
    the recomputation, and the run's summary."""
    import hwsim

    chips = prod(case.system["dims"])
    s: dict[str, Any] = {}
    for rc in RECOMPUTE:
        s = hwsim.run(scenario_for(case, rc)).summary
        if s["fits"]:
            return s["tokens_per_s"] / chips, rc, s
    return None, RECOMPUTE[-1], s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    rows, body = [], []
    for case in load_cases():
        t0 = time.perf_counter()
        got, rc, s = predict(case)
        err = None if got is None else got / case.published - 1
        rows.append(report_table.Row(case.id, "tpu-maxtext", "tokens/s/device", case.published,
                                     got, err, wall_s=time.perf_counter() - t0))
        body.append([case.id, f"{case.published:,.0f}", "-" if got is None else f"{got:,.0f}",
                     "-" if err is None else f"{100 * err:+.1f} %", rc,
                     f"{s.get('memory_per_device_gb', 0):.1f}", f"{100 * case.mfu:.1f} %",
                     f"{100 * s.get('mfu', 0):.1f} %"])
    head = ["case", "published", "hwsim", "error", "recompute", "GB/chip", "MFU pub.",
            "MFU hwsim"]
    print("\n".join(report_table.table(head, body, args.markdown, {0, 4})))
    print(report_table.summary_line(rows, WITHIN))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
