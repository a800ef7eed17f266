"""Imports point one way (DESIGN.md "Layers"): a module imports only from its own layer and the
layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "hwsim"

# layer of each top-level module or package, lowest first (summaries: the summary keys that
# simulation computes from finished jobs, beside it and imported by it only)
# planning sits above scenario: sweeps and searches vary scenario fields and run scenarios
# (issue 7: "sweeps run scenarios, so they live in hwsim/planning/"); the front calls planning
RANK = {"units": 0, "exceptions": 0, "columnar": 0, "catalog": 1, "engine": 1, "topology": 2, "workloads": 2,
        "jobs": 3, "analysis": 3, "simulation": 4, "summaries": 4, "scenario": 5, "planning": 6,
        "calibration": 6,
        "cli": 7, "cli_common": 7, "cli_capacity": 7,
        "tables": 7,
        "__init__": 7, "__main__": 7}
# planning (sweeps, the parallelism search) validates, builds and runs scenarios: it sits on the
# scenario front, below the command line; the scenario layer never imports it.
# pairs of same-rank layers that must not import each other
FORBIDDEN = {("engine", "catalog"), ("catalog", "engine"), ("topology", "workloads"),
             ("workloads", "topology"), ("workloads", "engine"), ("workloads", "catalog"),
             ("analysis", "jobs"), ("jobs", "analysis"), ("analysis", "engine"),
             # planning knows nothing of engine internals (DESIGN.md) nor of the jobs
             ("planning", "engine"), ("planning", "jobs"), ("planning", "simulation"),
             ("planning", "summaries"), ("summaries", "simulation"),
             # calibrate runs scenarios and, for nccl-tests, one collective through simulation
             # (hwsim.simulation.collective_time); it knows nothing of engine or jobs internals
             ("calibration", "engine"), ("calibration", "jobs"), ("calibration", "planning"),
             ("planning", "calibration")}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hwsim"):
            parts = node.module.split(".")
            if len(parts) > 1:
                yield parts[1]
            else:
                yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hwsim."):
                    yield a.name.split(".")[1]


def test_imports_point_down():
    bad = []
    for path in PKG.rglob("*.py"):
        me = _layer(path)
        for target in _imports(path):
            if target not in RANK or target == me:
                continue
            if RANK[target] > RANK[me] or (me, target) in FORBIDDEN:
                bad.append(f"{path.relative_to(PKG.parent)} imports hwsim.{target}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def test_engine_knows_nothing_of_hardware_or_jobs():
    words = ("gpu", "nvlink", "tensor", "yaml", "training")
    for path in (PKG / "engine").glob("*.py"):
        code = "\n".join(line for line in path.read_text().lower().splitlines()
                         if not line.strip().startswith("#"))
        tree = ast.parse(path.read_text())
        names = {n.id.lower() for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not any(w in names for w in words), path
        assert "import yaml" not in code
