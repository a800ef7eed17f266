"""What the validation-report tests share: loading a benchmark script as a module, and the
structure every report row must have."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT.parent / "shared" / "data" / "calibration.yaml"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def check_rows(rows) -> None:
    """Every row has a published value, a role, and either a prediction with its error or an
    error text."""
    for r in rows:
        assert r.published > 0, r
        assert r.role in ("fitted", "validated", "apart"), r
        if r.role == "apart":  # a published row not simulated: no prediction, its reason
            assert r.predicted is None and r.error is None and r.note, r
        elif r.predicted is None:
            assert r.note, f"{r.case}: neither a prediction nor an error text"
            assert r.error is None
        else:
            assert r.predicted > 0 and math.isfinite(r.predicted), r
            assert r.error == pytest.approx(r.predicted / r.published - 1, rel=1e-12, abs=1e-12)
