"""Exit statuses of the real ``hwsim`` entry point (README, ``hwsim --help``): 0 success, 1 bad
input, 3 simulated but the job does not fit (files still written), 4 refused by the budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

NO_FIT = {
    "name": "llama2-70b-on-one-a100",
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1}},
    "workload": {"kind": "training", "model": {"preset": "llama2-70b"}, "seq_len": 2048,
                 "precision": "bf16", "global_batch": 8},
}


def hwsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_help_documents_exit_statuses() -> None:
    p = hwsim("--help")
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "3 simulated, but the job does not fit" in text
    assert "4 refused by the size/event budget" in text


def test_job_that_does_not_fit_exits_3_and_still_writes(tmp_path: Path) -> None:
    path = tmp_path / "nofit.yaml"
    path.write_text(yaml.safe_dump(NO_FIT))
    out = tmp_path / "out"
    p = hwsim("run", str(path), "--out", str(out))
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr
    assert json.loads((out / "summary.json").read_text())["fits"] is False
    assert hwsim("run", "--quiet", str(path)).returncode == 3


def test_a_run_ends_with_its_answer_printed_and_its_folder_whole(tmp_path: Path) -> None:
    """``run`` ends the process without tearing it down (hwsim.cli.entry): the answer reaches
    a pipe and every result file is in place."""
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "quick"
    p = hwsim("run", str(root / "scenarios" / "quickstart.yaml"), "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "step" in p.stdout.lower() and str(out) in " ".join(p.stdout.split())
    for name in ("summary.json", "events.parquet", "trace.json", "utilization.parquet",
                 "scenario.json", "bottleneck.csv"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text())["fits"] is True
    q = hwsim("run", str(root / "scenarios" / "quickstart.yaml"), "--format", "json")
    assert q.returncode == 0 and json.loads(q.stdout)["fits"] is True


def test_bad_input_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**NO_FIT, "seeed": 1}))
    for cmd in (("validate", str(path)), ("run", str(path))):
        p = hwsim(*cmd)
        assert p.returncode == 1 and "Traceback" not in p.stderr
        assert p.stderr.startswith("error: ") and "seeed" in p.stderr


def test_validate_ends_with_every_line_printed(tmp_path: Path) -> None:
    """``validate`` also ends without tearing the process down (hwsim.cli.entry): every file's
    line reaches the pipes, in order, and the status is the worst file's."""
    root = Path(__file__).resolve().parent.parent
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**NO_FIT, "seeed": 1}))
    good = root / "scenarios" / "quickstart.yaml"
    p = hwsim("validate", str(good), str(bad), str(good))
    assert p.returncode == 1
    assert p.stdout.splitlines() == [f"ok: {good} (quickstart-logistic-regression-1xa100)"] * 2
    assert p.stderr.startswith("error: ") and "seeed" in p.stderr


def test_readme_documents_exit_statuses() -> None:
    """README's table of exit statuses names the same codes as ``hwsim --help``."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, words in ((0, "success"), (1, "bad input"), (3, "does not fit"),
                        (4, "size/event budget")):
        assert any(line.startswith(f"| {code} |") and words in line
                   for line in text.splitlines()), code
