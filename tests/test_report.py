"""The HTML report (hwsim.analysis.report, ``hwsim report RUN_DIR``): self-contained, the plots
of its run kind, one-paragraph errors for a bad RUN_DIR, and it renders in headless Chromium
without page errors."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import hwsim
from hwsim.analysis.report import render_report, run_kinds, write_report
from hwsim.cli import app
from hwsim.exceptions import HwsimError

pytest.importorskip("matplotlib", reason="the report needs the 'plot' extra (matplotlib)")

ROOT = Path(__file__).resolve().parent.parent
RUNS = {  # kind: (scenario, plot alt texts the report must show)
    "training": ("gpt-1.3b-3d-8xa100", {"step Gantt", "utilization heatmap", "bottleneck bars",
                                        "memory breakdown", "memory pools"}),
    "serving": ("llama2-7b-1xa100-serving", {"latency CDFs", "serving timeline",
                                             "bottleneck bars", "memory breakdown"}),
    "transfers": ("transfer-tiers", {"utilization heatmap", "bottleneck bars"}),
}
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for kind, (scenario, _) in RUNS.items():
        out[kind] = hwsim.run(ROOT / "scenarios" / f"{scenario}.yaml").save(base / kind)
    return out


@pytest.fixture(scope="module")
def reports(run_dirs: dict[str, Path]) -> dict[str, Path]:
    return {kind: write_report(path) for kind, path in run_dirs.items()}


def _imgs(page: str) -> dict[str, str]:
    """alt text -> src of every <img> of the page."""
    return dict(re.findall(r'<img alt="([^"]*)" src="([^"]*)"', page))


@pytest.mark.parametrize("kind", list(RUNS))
def test_report_is_self_contained_with_its_plots(kind: str, reports: dict[str, Path],
                                                 run_dirs: dict[str, Path]) -> None:
    path = reports[kind]
    assert path == run_dirs[kind] / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # nothing fetched from elsewhere: no http(s) in any src/href, no script, no external CSS
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    imgs = _imgs(page)
    assert RUNS[kind][1] <= set(imgs), sorted(imgs)
    for alt, src in imgs.items():  # every plot an inline PNG that decodes
        assert src.startswith("data:image/png;base64,"), alt
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n", alt
    summary = json.loads((run_dirs[kind] / "summary.json").read_text())
    assert run_kinds(summary) == [kind]
    for section in ("Summary", "Top bottlenecks", "Memory", "Configuration"):
        assert f"<h2>{section}</h2>" in page
    pre = re.search(r"<h2>Configuration</h2>\s*<pre>(.*?)</pre>", page, re.S)
    scenario = json.loads((run_dirs[kind] / "scenario.json").read_text())
    assert pre and html.unescape(pre.group(1)) == json.dumps(scenario, indent=2, sort_keys=True)


def test_report_content_matches_the_result(reports: dict[str, Path],
                                           run_dirs: dict[str, Path]) -> None:
    page = reports["training"].read_text(encoding="utf-8")
    s = json.loads((run_dirs["training"] / "summary.json").read_text())
    assert f"MFU {s['mfu']:.1%}" in page
    top = pd.read_csv(run_dirs["training"] / "bottleneck.csv").nlargest(1, "share")
    first_row = re.search(r"<h2>Top bottlenecks</h2><table>.*?<tbody><tr><td>([^<]*)</td>",
                          page.replace("\n", ""))
    assert first_row and first_row.group(1) == top["category"].iloc[0]
    serving = reports["serving"].read_text(encoding="utf-8")
    assert "TTFT p50" in serving and "KV-cache blocks" in serving
    assert "Step Gantt" not in serving and "Step Gantt" not in reports["transfers"].read_text()


def test_cli_report_writes_and_out(run_dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "t.html"
    res = CliRunner().invoke(app, ["report", str(run_dirs["transfers"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote {out}"
    assert out.read_text(encoding="utf-8") == render_report(run_dirs["transfers"])


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nope", r"error: no result directory '.*nope': it does not exist; make one "
                           r"with: hwsim run SCENARIO.yaml --out .*nope"),
    (lambda p: p, r"error: '.*' is not an hwsim result directory: it has no summary.json; give "
                  r"the folder written by: hwsim run SCENARIO.yaml --out DIR"),
    (lambda p: (p / "summary.json").write_text("[1]") and p,
     r"error: '.*summary.json' is not a JSON object of summary keys; give the folder "
     r"written by: hwsim run SCENARIO.yaml --out DIR"),
])
def test_cli_report_bad_run_dir(tmp_path: Path, make, message: str) -> None:
    res = CliRunner().invoke(app, ["report", str(make(tmp_path))])
    assert res.exit_code == 1
    text = res.output.strip()
    assert re.fullmatch(message, text), text
    assert "\n" not in text and "Traceback" not in text
    with pytest.raises(HwsimError):
        render_report(make(tmp_path))


# -- headless Chromium ------------------------------------------------------------------------

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--enable-logging=stderr", "--v=0"]


def _chromium(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, *_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _page_errors(stderr: str) -> list[str]:
    """Console messages of the page that are errors (uncaught exceptions, console.error, failed
    loads); Chromium's own log lines about D-Bus, GPU and sandbox are not the page's."""
    return [line for line in stderr.splitlines()
            if "Uncaught" in line or "ERROR:CONSOLE" in line
            or ("CONSOLE" in line and ("Error" in line or "Failed to load" in line))]


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium; "
                             ".ci/run installs it when it can)")


@needs_chromium
def test_chromium_error_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The page-error check is not vacuous: a page that throws is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>throw new Error("boom")</script>'
                   "</body></html>")
    res = _chromium(bad, tmp_path, "--dump-dom")
    assert any("boom" in line for line in _page_errors(res.stderr)), res.stderr[-2000:]


@needs_chromium
@pytest.mark.parametrize("kind", list(RUNS))
def test_report_renders_in_chromium(kind: str, reports: dict[str, Path], tmp_path: Path) -> None:
    res = _chromium(reports[kind], tmp_path, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert "<h1>hwsim report: " in dom
    alts = set(re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', dom))
    assert RUNS[kind][1] <= alts, sorted(alts)
    assert _page_errors(res.stderr) == []


@needs_chromium
def test_report_screenshot_is_not_blank(reports: dict[str, Path], tmp_path: Path) -> None:
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    res = _chromium(reports["training"], tmp_path, "--window-size=1200,2400",
                    f"--screenshot={shot}")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    assert _page_errors(res.stderr) == []
    pixels = imread(io.BytesIO(shot.read_bytes()), format="png")[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels.mean(axis=2) < 0.9).mean()  # share of pixels that are not (near) white
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert ink > 0.05 and colours > 50, (ink, colours)  # text, tables and colourful plots
