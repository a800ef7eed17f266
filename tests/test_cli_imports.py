"""Fast start-up (issue 15): ``import hwsim``, ``hwsim --help`` and ``hwsim validate`` load no
library they do not use. Each case runs the real code path in a fresh interpreter and lists the
heavy top-level packages left in ``sys.modules``; an ``import pandas`` (or simpy, numpy, ...) at
the top of a module on the path makes it fail. Timing is not asserted here:
``benchmarks/bench_cli.py`` measures it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

HEAVY = ("pandas", "matplotlib", "pyarrow", "dask", "distributed", "scipy", "simpy", "numpy")
"""Never loaded by validate (training, transfer and data-loading scenarios), help or import."""

_CHILD = r"""
import json, sys
code = 0
mode, args = sys.argv[1], sys.argv[2:]
if mode == "import":
    import hwsim
else:
    from hwsim.cli import main
    sys.argv = ["hwsim", *args]
    try:
        main()
    except SystemExit as exit:
        code = exit.code or 0
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules}),
                  "hwsim": sorted(m for m in sys.modules if m.startswith("hwsim"))}))
"""


def _loaded(mode: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, *args], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("scenario", [
    "gpt3-175b-1024xa100",              # 3D parallel, folded
    "bloom-176b-384xa100-checkpoint",   # checkpoints
    "resnet50-8xa100-nvme",             # data parallel with an input pipeline
    "dlio-unet3d-micron9550",           # data loader
    "transfer-tiers",                   # transfers
])
def test_validate_loads_no_heavy_library(scenario: str) -> None:
    got = _loaded("cli", "validate", str(ROOT / "scenarios" / f"{scenario}.yaml"))
    assert got["code"] == 0
    # the check ran in full: schema, graph and job plan ...
    assert {"pydantic", "networkx", "yaml"} <= set(got["modules"])
    assert {"hwsim.scenario.build", "hwsim.topology.builders"} <= set(got["hwsim"])
    # ... without the simulator, the analysis or the sweeps
    assert sorted(set(HEAVY) & set(got["modules"])) == []
    assert [m for m in got["hwsim"] if m.split(".")[:2][-1] in (
        "engine", "analysis", "planning", "simulation")] == []


def test_validate_serving_loads_no_analysis_library() -> None:
    """A serving scenario's plan draws its requests (numpy) and builds the serving job's plan,
    whose module needs SimPy; the frames, plots and sweeps stay out."""
    got = _loaded("cli", "validate", str(ROOT / "scenarios" / "llama2-7b-1xa100-serving.yaml"))
    assert got["code"] == 0 and "hwsim.scenario.build_inference" in got["hwsim"]
    assert sorted({"pandas", "matplotlib", "pyarrow", "dask", "scipy"} & set(got["modules"])) == []


@pytest.mark.parametrize("mode, args, also", [
    ("import", (), ("networkx", "pydantic", "yaml", "typer")),
    ("cli", ("--help",), ("networkx", "pydantic", "yaml")),
])
def test_import_and_help_load_nothing_heavy(mode: str, args: tuple, also: tuple) -> None:
    got = _loaded(mode, *args)
    assert got["code"] == 0 and "hwsim" in got["modules"]
    assert sorted(set(HEAVY + also) & set(got["modules"])) == []


@pytest.mark.parametrize("scenario", [
    "gpt3-175b-1024xa100",              # 3D parallel, folded, steady state advanced
    "bloom-176b-384xa100-checkpoint",   # checkpoints
    "resnet50-8xa100-nvme",             # data parallel with an input pipeline
    "dlio-unet3d-micron9550",           # data loader
    "transfer-tiers",                   # transfers
])
def test_run_with_out_writes_every_file_without_pandas(scenario: str, tmp_path: Path) -> None:
    """``hwsim run FILE --out DIR`` of a training, data-loading or transfer scenario builds its
    summary and writes its files from numpy columns (:class:`hwsim.columnar.Table`) and pyarrow:
    pandas (0.4 s of the process) is never imported; the files are whole."""
    got = _loaded("cli", "run", str(ROOT / "scenarios" / f"{scenario}.yaml"), "--out",
                  str(tmp_path / "out"), "-q")
    assert got["code"] == 0
    assert {"simpy", "numpy", "pyarrow"} <= set(got["modules"])
    assert "pandas" not in got["modules"]
    import pandas as pd

    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"summary.json", "events.parquet", "utilization.parquet", "memory.parquet",
            "bottleneck.csv", "trace.json", "scenario.json"} <= files
    shares = pd.read_csv(tmp_path / "out" / "bottleneck.csv")["share"]
    assert abs(shares.sum() - 1.0) < 1e-9
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary.get("fits", True) is True and summary["bottleneck"] in set(
        pd.read_csv(tmp_path / "out" / "bottleneck.csv")["category"])
