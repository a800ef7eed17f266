"""The user's measured runs: a table of scenario files and what each measured.

CSV (a header line, then one row per run) or YAML (a list of mappings, or ``runs:`` holding
one), with the columns:

- ``scenario``: the scenario file of the run (relative paths are read from the table's folder);
- one measured figure, exactly one of ``step_time_s``, ``tokens_per_s``, ``samples_per_s`` (the
  ``summary.json`` keys of ``hwsim run``: the whole job's throughput, not per GPU);
- optional ``name`` and ``source`` (where the figure comes from).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from hwsim.exceptions import ScenarioError
from hwsim.scenario import Scenario, load_scenario
from hwsim.scenario.calibration import Key, apply

__all__ = ["MeasuredRun", "METRICS", "read_runs", "predict_run", "devices_of", "stack_of"]

METRICS = ("step_time_s", "tokens_per_s", "samples_per_s")
"""Measured figures a row may give (``summary.json`` keys)."""
_COLUMNS = ("scenario", "name", "source") + METRICS


@dataclass
class MeasuredRun:
    """One measured run: its scenario (loaded), the figure's key and value, a name."""

    name: str
    scenario: Scenario
    metric: str
    measured: float
    source: str = ""


def read_runs(path: str | Path) -> list[MeasuredRun]:
    """The measured runs of the table *path* (CSV or YAML, see the module doc), each scenario
    loaded and validated; errors name the table, the row and the field."""
    p = Path(path)
    file = str(p)
    if not p.is_file():
        raise ScenarioError("no such table of measured runs (a CSV or YAML with columns scenario "
                            "and one of " + ", ".join(METRICS) + ")", file=file)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ScenarioError(f"not valid YAML ({str(err).splitlines()[0]})", file=file) from None
        if isinstance(data, dict) and set(data) == {"runs"}:
            data = data["runs"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ScenarioError("a YAML table of measured runs is a list of mappings (scenario: "
                                "FILE, step_time_s: 1.23), or runs: holding one", file=file)
        rows = data
    else:
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None}
                for r in csv.DictReader(io.StringIO(text))]
    if not rows:
        raise ScenarioError("the table has no rows; valid: a header line 'scenario,step_time_s' "
                            "and one row per measured run", file=file)
    return [_row(r, i, p, file) for i, r in enumerate(rows)]


def _row(r: Mapping[str, Any], i: int, table: Path, file: str) -> MeasuredRun:
    where = f"rows[{i}]"
    extra = [k for k in r if k not in _COLUMNS]
    if extra:
        raise ScenarioError(f"unknown column {extra[0]!r}; valid columns: {', '.join(_COLUMNS)}",
                            file=file, field=where)
    scen = r.get("scenario")
    if not scen:
        raise ScenarioError("missing scenario (the run's scenario file)", file=file,
                            field=f"{where}.scenario")
    given = [m for m in METRICS if r.get(m) not in (None, "")]
    if len(given) != 1:
        raise ScenarioError(f"give exactly one measured figure of {', '.join(METRICS)}; "
                            f"got {', '.join(given) or 'none'}", file=file, field=where)
    metric = given[0]
    try:
        value = float(r[metric])
    except (TypeError, ValueError):
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise ScenarioError(f"{r[metric]!r} is not a positive number", file=file,
                            field=f"{where}.{metric}")
    path = Path(str(scen)).expanduser()
    if not path.is_absolute():
        path = table.parent / path
    if not path.is_file():
        raise ScenarioError(f"no such scenario file {str(path)!r} (a relative path is read from "
                            "the table's folder)", file=file, field=f"{where}.scenario")
    s = load_scenario(path)
    if s.jobs is not None or s.workload.kind != "training":
        raise ScenarioError(f"{str(path)!r} is not a single training workload; valid: a "
                            "scenario with workload.kind: training", file=file,
                            field=f"{where}.scenario")
    return MeasuredRun(str(r.get("name") or path.stem), s, metric, value,
                       str(r.get("source") or ""))


def predict_run(run: MeasuredRun, overrides: Mapping[Key, float]) -> float:
    """The run's figure simulated with *overrides* on top of its scenario's own calibration."""
    from hwsim.scenario.build import run_scenario

    summary = run_scenario(run.scenario, adjust=(lambda g: apply(g, overrides))
                           if overrides else None, record="summary").summary
    if summary.get("fits") is False:
        raise ScenarioError(f"the run {run.name!r} does not fit in device memory in the model, "
                            "so it has no step time to compare; valid: a run that fits "
                            "(`hwsim run` says fits: true)", file=run.name)
    return float(summary[run.metric])


def devices_of(run: MeasuredRun) -> list[str]:
    """Catalog ids of the accelerators (else CPUs) the run trains on."""
    from hwsim.scenario.build import build_graph

    g = build_graph(run.scenario.cluster)
    kind = run.scenario.compute_device
    return sorted({d["spec"] for _, d in g.nodes(data=True) if d.get("kind") == kind})


def stack_of(run: MeasuredRun) -> str:
    """The name of the software stack the run's job runs (``workload.stack``, else the default
    for its model's kind: :func:`hwsim.scenario.build.job_stack`)."""
    from hwsim.scenario.build import job_stack
    from hwsim.workloads import resolve_model

    w = run.scenario.workload
    if w.stack is not None:
        return w.stack
    fields = w.model.model_dump(exclude_none=True)
    fields.pop("flash_attention", None)
    try:
        spec = resolve_model(fields)
    except ValueError as err:
        raise ScenarioError(str(err), file=run.name, field="workload.model") from None
    return job_stack(w, spec).name
