"""Every file in scenarios/ loads, runs, and matches its golden summary.

The golden files pin the headline figures so that a model change shows up as a diff to review.
After a deliberate change, regenerate them with ``HWSIM_UPDATE_GOLDEN=1 pytest
tests/test_scenarios.py`` and say why in the commit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

import hwsim

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
KEYS = ("fits", "bottleneck", "step_time_s", "time_to_train_s", "samples_per_s", "mfu",
        "makespan_s", "bytes_moved", "memory_per_device_gb", "checkpoint_bytes",
        "checkpoint_stall_s", "checkpoint_restore_s")


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_runs_and_matches_golden(path):
    r = hwsim.run(path)
    # a shared cluster's jobs: job.<name>.<key>
    got = {k: v for k, v in r.summary.items() if k in KEYS or k.split(".", 2)[-1] in KEYS}
    assert got, "no headline keys in the summary"
    b = r.bottleneck  # one breakdown per job on a shared cluster
    shares = b.groupby("job")["share"].sum().tolist() if "job" in b else [b["share"].sum()]
    assert shares == pytest.approx([1.0] * len(shares))
    golden = GOLDEN / f"{path.stem}.json"
    if os.environ.get("HWSIM_UPDATE_GOLDEN") or not golden.exists():
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
        if not os.environ.get("HWSIM_UPDATE_GOLDEN"):
            pytest.fail(f"wrote missing golden file {golden.name}; review and commit it")
    want = json.loads(golden.read_text())
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, float) and isinstance(got[k], float):
            assert math.isclose(got[k], v, rel_tol=1e-9), (k, got[k], v)
        else:
            assert got[k] == v, (k, got[k], v)


def test_every_scenario_is_covered():
    assert len(SCENARIOS) >= 7
    assert (ROOT / "scenarios" / "quickstart.yaml") in SCENARIOS
