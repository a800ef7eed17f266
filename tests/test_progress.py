"""Progress bars: drawn on a terminal, silent otherwise; a run's bar counts its steps or
requests; ``hwsim run`` in a pipe prints none."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from hwsim import progress as prog
from hwsim.progress import progress, shown

ROOT = Path(__file__).resolve().parents[1]


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100), buf


def test_not_a_terminal_prints_nothing() -> None:
    console, buf = _console(False)
    assert not shown(console)
    with progress(total=10, label="sweep", console=console) as bar:
        for _ in range(10):
            bar.advance()
    assert bar.completed == 10 and buf.getvalue() == ""


def test_terminal_shows_a_bar_that_reaches_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWSIM_PROGRESS", raising=False)
    console, buf = _console(True)
    assert shown(console)
    with progress(total=7, label="sweep", console=console) as bar:
        for _ in range(7):
            bar.advance()
    out = buf.getvalue()
    assert "sweep" in out and "7/7" in out and "\x1b[" in out  # drawn, with escape codes
    assert bar.completed == 7


def test_hwsim_progress_0_turns_bars_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWSIM_PROGRESS", "0")
    console, buf = _console(True)
    assert not shown(console)
    with progress(total=3, console=console) as bar:
        bar.update(3)
    assert buf.getvalue() == ""


def test_nested_bar_joins_the_shown_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HWSIM_PROGRESS", raising=False)
    console, buf = _console(True)
    with progress(total=2, label="sweep", console=console) as outer:
        assert shown()  # inside a shown bar, runs report too
        for _ in range(2):
            with progress(total=5, label="inner-run") as inner:
                inner.update(5)
            outer.advance()
    out = buf.getvalue()
    assert "inner-run" in out and "5/5" in out and "2/2" in out
    assert not shown(console := _console(False)[0]) and prog._ACTIVE.get() is None


def test_run_reports_steps_and_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """A training run's bar counts its steps, a serving run's its finished requests."""
    import hwsim

    monkeypatch.delenv("HWSIM_PROGRESS", raising=False)
    for name, unit in (("mlp-dp-nvlink", "steps"), ("llama2-7b-1xa100-serving", "requests")):
        console, buf = _console(True)
        with progress(total=1, label="sweep", console=console) as sweep:
            result = hwsim.run(ROOT / "scenarios" / f"{name}.yaml")
            sweep.advance()
        total = (result.summary["steps_simulated"] if unit == "steps"
                 else result.summary["requests_completed"])
        assert f"{total}/{total}" in buf.getvalue(), (name, total)


def _cli(tmp_path: Path, stderr: int, *opts: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HWSIM_PROGRESS", None)
    return subprocess.run([sys.executable, "-m", "hwsim.cli", "run", *opts,
                           str(ROOT / "scenarios" / "mlp-dp-nvlink.yaml")],
                          stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def test_cli_run_in_a_pipe_prints_no_progress(tmp_path: Path) -> None:
    proc = _cli(tmp_path, subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and "time to train" in proc.stdout
    assert "0:00:0" not in proc.stdout  # no bar (its elapsed-time column) on stdout either


def _on_pty(tmp_path: Path, *opts: str) -> tuple[int, str]:
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        proc = _cli(tmp_path, slave, *opts)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_cli_run_on_a_terminal_shows_progress(tmp_path: Path) -> None:
    rc, err = _on_pty(tmp_path)
    assert rc == 0 and "mlp-dp-8xa100-nvlink" in err and "10/10" in err, err[-500:]
    rc, err = _on_pty(tmp_path, "--quiet")
    assert rc == 0 and err == ""
