"""The command line: exit codes, one-paragraph errors on stderr, never a traceback."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import hwsim.catalog
from hwsim import cli
from hwsim.analysis.result import Result
from hwsim.exceptions import InfeasibleError, ScenarioError

runner = CliRunner()

SCENARIO = {
    "name": "tiny-train",
    "cluster": {"nodes": 1, "node": {"gpu": "H100-SXM5-80GB", "gpus_per_node": 8,
                                     "intra_node": "nvlink4"}},
    "workload": {"kind": "training", "model": {"preset": "mlp"}, "global_batch": 64},
}


@pytest.fixture
def fake_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalog rows of a fixed shape, so the table/JSON rendering tests do not depend on the
    catalog's contents (ids are still checked against the real catalog)."""
    monkeypatch.setattr(hwsim.catalog, "catalog_rows", lambda s: [
        {"id": f"{s}-a", "bw_bytes_per_s": 1.5e11, "source": "[datasheet]"},
        {"id": f"{s}-b", "notes": None}], raising=False)


def _write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_ok(tmp_path: Path, fake_catalog: None) -> None:
    a = _write(tmp_path, SCENARIO, "a.yaml")
    b = _write(tmp_path, {**SCENARIO, "name": "other"}, "b.yaml")
    result = runner.invoke(cli.app, ["validate", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: {a} (tiny-train)\nok: {b} (other)\n"


def test_validate_errors_exit_1(tmp_path: Path, fake_catalog: None) -> None:
    good = _write(tmp_path, SCENARIO, "good.yaml")
    bad = _write(tmp_path, {**SCENARIO, "workload": {**SCENARIO["workload"], "precison": "bf16"}},
                 "bad.yaml")
    result = runner.invoke(cli.app, ["validate", str(good), str(bad), str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    _no_traceback(result)
    assert result.stdout == f"ok: {good} (tiny-train)\n"
    lines = result.stderr.splitlines()
    assert lines == [
        f"error: {bad}: workload.precison: unknown key 'precison'; valid keys: "
        + ", ".join(sorted(["kind", "model", "seq_len", "precision", "global_batch", "parallelism",
                            "optimizer", "loss", "steps", "epochs", "train_tokens",
                            "train_samples", "data", "device", "framework_overhead",
                            "collective", "fold", "checkpoint", "failures", "stack",
                            "steady_state"]))
        + "; did you mean 'precision'?",
        f"error: {tmp_path / 'none.yaml'}: no such scenario file (looked in {str(tmp_path)!r})",
    ]


def test_validate_unknown_catalog_id(tmp_path: Path, fake_catalog: None) -> None:
    data = {**SCENARIO, "cluster": {"node": {"gpu": "H100-SXM9", "gpus_per_node": 8}}}
    result = runner.invoke(cli.app, ["validate", str(_write(tmp_path, data))])
    assert result.exit_code == 1
    path = tmp_path / "s.yaml"
    assert result.stderr.startswith(f"error: {path}: cluster.node.gpu: unknown device")
    assert "H100-SXM5-80GB" in result.stderr


def test_validate_usage_error() -> None:
    assert runner.invoke(cli.app, ["validate"]).exit_code == 2


def _fake_build(monkeypatch: pytest.MonkeyPatch, run) -> None:
    module = types.ModuleType("hwsim.scenario.build")
    module.run_scenario = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hwsim.scenario.build", module)


def _result(scenario, **_) -> Result:
    frame = pd.DataFrame({"start_s": [0.0], "end_s": [1.0], "resource": ["n0.gpu0/compute"]})
    return Result(name=scenario.name, summary={"step_time_s": 0.125, "mfu": 0.41234,
                                               "fits": True, "bottleneck": "compute",
                                               "bottleneck_share": 0.8},
                  events=frame, utilization=pd.DataFrame(), memory=pd.DataFrame(),
                  bottleneck=pd.DataFrame({"category": ["compute", "comm:nvlink"],
                                           "seconds": [0.1, 0.025], "share": [0.8, 0.2]}),
                  config={"name": scenario.name})


def test_run_prints_summary_and_saves(tmp_path: Path, fake_catalog: None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_build(monkeypatch, _result)
    out = tmp_path / "out"
    result = runner.invoke(cli.app, ["run", str(_write(tmp_path, SCENARIO)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the answer first; the summary table only with --verbose (or --table)
    assert result.stdout.splitlines()[:2] == ["tiny-train", "step time: 125 ms"]
    assert "bottleneck: compute (80% of critical path)" in result.stdout
    assert "step_time_s" not in result.stdout
    assert json.loads((out / "summary.json").read_text())["step_time_s"] == 0.125
    for flag in ("--verbose", "--table"):
        verbose = runner.invoke(cli.app, ["run", str(tmp_path / "s.yaml"), flag])
        assert verbose.exit_code == 0 and "step_time_s" in verbose.stdout
        assert "0.4123" in verbose.stdout
    as_json = runner.invoke(cli.app, ["run", str(tmp_path / "s.yaml"), "--format", "json"])
    assert json.loads(as_json.stdout)["mfu"] == 0.41234
    quiet = runner.invoke(cli.app, ["run", str(_write(tmp_path, SCENARIO)), "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_run_errors_are_one_paragraph(tmp_path: Path, fake_catalog: None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def infeasible(scenario, **_):
        raise InfeasibleError("tp=3 does not divide 8 devices per node")

    _fake_build(monkeypatch, infeasible)
    result = runner.invoke(cli.app, ["run", str(_write(tmp_path, SCENARIO))])
    assert result.exit_code == 1
    _no_traceback(result)
    assert result.stderr == "error: tp=3 does not divide 8 devices per node\n"
    def unresolved(scenario, **_):
        raise ScenarioError("unknown endpoint 'x'", field="workload.transfers[0].src")

    _fake_build(monkeypatch, unresolved)
    result = runner.invoke(cli.app, ["run", str(tmp_path / "s.yaml")])
    assert result.exit_code == 1  # errors found while building still name the file
    assert result.stderr == (f"error: {tmp_path / 's.yaml'}: workload.transfers[0].src: "
                             "unknown endpoint 'x'\n")
    missing = runner.invoke(cli.app, ["run", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "no such scenario file" in missing.stderr


def test_catalog_table_and_json(fake_catalog: None) -> None:
    table = runner.invoke(cli.app, ["catalog", "links"])
    assert table.exit_code == 0 and "links-a" in table.stdout and "[datasheet]" in table.stdout
    as_json = runner.invoke(cli.app, ["catalog", "--format", "json"])
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert list(data) == ["devices", "links", "storage"] and data["storage"][0]["id"] == "storage-a"
    assert runner.invoke(cli.app, ["catalog", "gpus"]).exit_code == 2


def test_main_turns_escaping_errors_into_exit_1(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        raise ScenarioError("bad thing", file="x.yaml", field="seed")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: x.yaml: seed: bad thing\n"


def test_run_real_scenario_end_to_end(tmp_path: Path) -> None:
    """The real build and catalog, on the smallest shipped scenario."""
    pytest.importorskip("hwsim.scenario.build")
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"
    if not scenario.is_file():
        pytest.skip("scenarios/quickstart.yaml not present")
    out = tmp_path / "quick"
    result = runner.invoke(cli.app, ["run", str(scenario), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "\nbottleneck (first epoch, read from storage): overhead (" in result.stdout
    assert "% of critical path" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step_time_s"] > 0
    trace = json.loads((out / "trace.json").read_text())
    assert all({"ph", "ts", "pid", "tid"} <= set(e) for e in trace["traceEvents"])
