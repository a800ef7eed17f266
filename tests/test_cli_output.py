"""What the command line prints (issue 12, items 3-6, 8 and 17): the answer first, lines that agree
with each other and with the summary, tables that never cut a cell, --format json|csv wherever a
table is printed. Every case runs the real ``hwsim`` entry point in a subprocess."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"

# llama2-70b trained on one A100-80GB: needs far more than the device holds
TOO_BIG = {
    "name": "llama2-70b-1xa100", "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 1}},
    "workload": {"kind": "training", "model": {"preset": "llama2-70b"}, "seq_len": 2048,
                 "precision": "bf16", "global_batch": 8, "steps": 1},
}
SMALL_TRAIN = {
    "name": "tiny", "seed": 0,
    "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 2,
                                     "intra_node": "nvlink3"}},
    "workload": {"kind": "training", "seq_len": 512, "precision": "bf16", "global_batch": 16,
                 "model": {"layers": 4, "hidden": 512, "heads": 8, "vocab": 32000},
                 "parallelism": {"micro_batch": 4}, "optimizer": "adamw", "steps": 2},
}


def hwsim(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
          ) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    full.update(HWSIM_PROGRESS="0", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "hwsim.cli", *args], capture_output=True,
                       text=True, timeout=300, env=full, cwd=cwd)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def _write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _seconds(text: str) -> float:
    """``92.1 us``, ``12.1 s``, ``2.09 h``, ``15 min`` in seconds."""
    value, unit = text.split()
    return float(value) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0,
                           "h": 3600.0, "d": 86400.0}[unit]


# -- item 3: a job that does not fit ----------------------------------------------------------
def test_a_job_that_does_not_fit_says_so_once_with_the_summarys_memory(tmp_path):
    path = _write(tmp_path, TOO_BIG)
    p = hwsim("run", str(path))
    assert p.returncode == 3, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "llama2-70b-1xa100" and len(lines) == 2, p.stdout
    assert p.stdout.count("does not fit") == 1 and "critical path" not in p.stdout
    summary = json.loads(hwsim("run", str(path), "--format", "json").stdout)
    # the printed need is memory_per_device_gb, and its parts are the summary's memory_*_gb
    need = re.search(r"does not fit: ([\d.]+) TB needed per device, 80 GB on n0\.gpu0 \((.*)\)",
                     lines[1])
    assert need, lines[1]
    assert float(need.group(1)) == pytest.approx(summary["memory_per_device_gb"] / 1e3, rel=5e-3)
    for part in need.group(2).split(", "):
        name, value, unit = part.rsplit(" ", 2)
        gb = float(value) * {"GB": 1.0, "TB": 1e3, "MB": 1e-3}[unit]
        assert gb == pytest.approx(summary[f"memory_{name.replace(' ', '_')}_gb"], rel=5e-3)
    assert summary["bottleneck_share"] is None  # it never ran: no critical path


# -- item 4: page cache ---------------------------------------------------------------------
def test_page_cache_headline_adds_up_and_names_the_phases():
    p = hwsim("run", str(SCENARIOS / "resnet50-8xa100-hdd.yaml"))
    assert p.returncode == 0, p.stderr
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("time to train: "))
    m = re.fullmatch(r"time to train: (.+?) for ([\d,]+) steps: the first epoch ([\d,]+) steps "
                     r"of (.+?) \((.+?), from storage\), the later epochs ([\d,]+) steps of "
                     r"(.+?) \((.+?), from the page cache\)", line)
    assert m, line
    total, first, later = (int(m.group(i).replace(",", "")) for i in (2, 3, 6))
    assert first + later == total
    t_first, t_later = _seconds(m.group(4)), _seconds(m.group(7))
    assert first * t_first + later * t_later == pytest.approx(_seconds(m.group(1)), rel=0.02)
    bottleneck = next(ln for ln in p.stdout.splitlines() if ln.startswith("bottleneck"))
    assert bottleneck.startswith("bottleneck (first epoch, read from storage): storage")
    assert "later epochs read from the page cache" in bottleneck


def test_page_cache_phases_in_the_summary_add_up():
    for name in ("resnet50-8xa100-hdd.yaml", "page-cache-second-epoch-hdd.yaml",
                 "quickstart.yaml"):
        s = json.loads(hwsim("run", str(SCENARIOS / name), "--format", "json").stdout)
        assert s["first_epoch_steps"] + s["later_epochs_steps"] == s["total_steps"], name
        assert s["first_epoch_time_s"] + s["later_epochs_steps"] * s[
            "later_epochs_step_time_s"] == pytest.approx(s["time_to_train_s"], rel=1e-9), name
        assert s["later_epochs_step_time_s"] < s["first_epoch_time_s"] / s["first_epoch_steps"]


def test_second_epoch_simulated_from_the_cache_is_not_averaged_into_one_step():
    p = hwsim("run", str(SCENARIOS / "page-cache-second-epoch-hdd.yaml"))
    assert p.returncode == 0, p.stderr
    assert "the first epoch 10 steps of 1.51 s" in p.stdout
    assert "the later epochs 10 steps of " in p.stdout and "from the page cache" in p.stdout
    assert "(steps 2-20: first epoch from storage and later from cache)" in p.stdout


# -- item 5: the quickstart leads with the answer --------------------------------------------
def test_quickstart_answers_first_and_its_lines_agree():
    p = hwsim("run", str(SCENARIOS / "quickstart.yaml"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) <= 7 and "memory_weights_gb" not in p.stdout, p.stdout
    assert lines[1].startswith("time to train: ") and lines[2].startswith("throughput: ")
    assert lines[-1].startswith("fits: ")
    per_step = next(ln for ln in lines if ln.startswith("per step (rank 0"))
    parts = dict(re.findall(r"(\w[\w ]*?) [\d.]+ \w?s \(([\d.]+)%\)", per_step.split(": ", 1)[1]))
    bottleneck = next(ln for ln in lines if ln.startswith("bottleneck"))
    share = float(re.search(r"overhead \((\d+)% of critical path\)", bottleneck).group(1))
    # the overhead is the time of the compute and optimizer parts, and the line says so
    assert ("its time lies in the compute and optimizer parts above: ops that take their "
            "launch/dispatch overhead, not their math") in bottleneck
    assert float(parts["compute"]) + float(parts["optimizer"]) == pytest.approx(share, abs=1.0)
    verbose = hwsim("run", str(SCENARIOS / "quickstart.yaml"), "--verbose")
    assert verbose.stdout.startswith(p.stdout) and "memory_weights_gb" in verbose.stdout


# -- item 6: tables that fit, and --format everywhere ----------------------------------------
def test_catalog_never_cuts_a_name_at_any_width():
    ids = [r["id"] for r in json.loads(hwsim("catalog", "--format", "json").stdout)["devices"]]
    for columns in ("200", "60", "20"):
        p = hwsim("catalog", "devices", env={"COLUMNS": columns})
        assert p.returncode == 0 and "…" not in p.stdout
        words = set(p.stdout.split())
        assert set(ids) <= words, (columns, set(ids) - words)
    wide = hwsim("catalog", "links", env={"COLUMNS": "200"}).stdout.splitlines()
    assert max(map(len, wide)) <= 200 and wide[2].split()[:2] == ["id", "class"]  # a grid


def test_catalog_csv_has_every_row():
    data = json.loads(hwsim("catalog", "--format", "json").stdout)
    rows = list(csv.DictReader(io.StringIO(hwsim("catalog", "--format", "csv").stdout)))
    assert [r["table"] for r in rows] == [s for s in data for _ in data[s]]
    one = list(csv.DictReader(io.StringIO(hwsim("catalog", "links", "-f", "csv").stdout)))
    assert [r["id"] for r in one] == [r["id"] for r in data["links"]]


def test_run_formats(tmp_path):
    path = _write(tmp_path, SMALL_TRAIN)
    as_json = json.loads(hwsim("run", str(path), "--format", "json").stdout)
    rows = {r["key"]: r["value"] for r in csv.DictReader(io.StringIO(
        hwsim("run", str(path), "--format", "csv").stdout))}
    assert set(rows) == set(as_json)
    assert float(rows["step_time_s"]) == as_json["step_time_s"]  # full precision


def test_piped_search_prints_whole_numbers_and_formats(tmp_path):
    path = _write(tmp_path, SMALL_TRAIN)
    p = hwsim("search", str(path), "--budget", "2", "--top", "3")  # a pipe: no width
    assert p.returncode == 0, p.stderr
    assert "…" not in p.stdout
    rows = json.loads(hwsim("search", str(path), "--budget", "2", "--top", "3",
                            "--format", "json").stdout)
    assert len(rows) == 3 and {"tp", "pp", "dp", "status", "step_time_s"} <= set(rows[0])
    for row in rows:  # every printed step time is the row's, to 4 digits, uncut
        if row["step_time_s"] is not None:
            assert f"{row['step_time_s']:.4g}" in p.stdout
    as_csv = list(csv.DictReader(io.StringIO(hwsim("search", str(path), "--budget", "2",
                                                   "--top", "3", "-f", "csv").stdout)))
    assert [r["status"] for r in as_csv] == [r["status"] for r in rows]


def test_capacity_serve_csv(tmp_path):
    from test_capacity import SERVE  # the capacity tests' small serving scenario

    serve = copy.deepcopy(SERVE)
    serve["workload"]["arrivals"]["requests"] = 60
    p = hwsim("capacity", "serve", str(_write(tmp_path, serve)), "--rate", "5", "--ttft", "1",
              "--tpot", "0.1", "--requests", "60", "--format", "csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert rows and rows[0]["device"] == "A100-SXM4-80GB" and "answer:" not in p.stdout


# -- item 17: a transfer that cannot land ----------------------------------------------------
def test_a_transfer_that_does_not_fit_exits_3_and_says_why(tmp_path):
    data = yaml.safe_load((SCENARIOS / "transfer-tiers.yaml").read_text())
    data["workload"]["transfers"][0]["size"] = "1e20 B"
    p = hwsim("run", str(_write(tmp_path, data)))
    assert p.returncode == 3, (p.stdout, p.stderr)
    assert ("1 of 3 transfers failed: hdd-to-node0: does not fit: dc1/n0.nvme holds 15.4 TB "
            "(15.4 TB free), the transfer needs 100 EB") in p.stdout
    assert "the others done in 2.47 h (20 TB moved)" in p.stdout
    for t in data["workload"]["transfers"]:
        t["size"] = "1e20 B"
    p = hwsim("run", str(_write(tmp_path, data)))
    assert p.returncode == 3 and "3 of 3 transfers failed" in p.stdout
    assert "done in" not in p.stdout and "0 B moved" not in p.stdout


# -- item 8: smaller headline faults ---------------------------------------------------------
def test_no_time_to_train_without_a_budget(tmp_path):
    p = hwsim("run", str(_write(tmp_path, SMALL_TRAIN)))
    assert p.returncode == 0, p.stderr
    assert "time to train:" not in p.stdout
    assert re.search(r"^step time: .+ \(2 steps simulated; no epochs, train_samples or "
                     r"train_tokens, so no time to train\)$", p.stdout, re.M)
    dlio = hwsim("run", str(SCENARIOS / "dlio-unet3d-micron9550.yaml"))  # a storage check
    assert dlio.stdout.splitlines()[1].startswith("accelerator utilization: ")
    assert "time to train" not in dlio.stdout and "step time:" not in dlio.stdout
    budget = {**SMALL_TRAIN, "workload": {**SMALL_TRAIN["workload"], "train_tokens": 1e9}}
    p = hwsim("run", str(_write(tmp_path, budget, "b.yaml")))
    assert re.search(r"^time to train: .+ \(122,071 steps of .+\)$", p.stdout, re.M), p.stdout


def test_serving_near_saturation_says_the_first_token_waits_in_the_queue(tmp_path):
    data = yaml.safe_load((SCENARIOS / "llama2-70b-tp4x2-h100-serving.yaml").read_text())
    data["workload"]["arrivals"].update(rate_per_s=30.0, requests=600)  # ~1.5x its capacity
    p = hwsim("run", str(_write(tmp_path, data)))
    assert p.returncode == 0, p.stderr
    s = json.loads(hwsim("run", str(tmp_path / "s.yaml"), "--format", "json").stdout)
    assert s["ttft_bottleneck"] == "queueing" and s["ttft_share_queueing"] > 0.5
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("bottleneck: "))
    assert (f"the time to first token is {s['ttft_share_queueing']:.0%} queueing (waiting for a "
            "free batch slot") in line
    light = yaml.safe_load((SCENARIOS / "llama2-70b-tp4x2-h100-serving.yaml").read_text())
    light["workload"]["arrivals"].update(rate_per_s=2.0, requests=100)
    q = hwsim("run", str(_write(tmp_path, light, "light.yaml")))
    assert "queueing" not in q.stdout


def test_report_gantt_of_a_32_gpu_run_shows_all_32(tmp_path):
    pytest.importorskip("matplotlib")
    data = yaml.safe_load((SCENARIOS / "dp-straggler-16xa100.yaml").read_text())
    data["cluster"]["nodes"] = 4
    data["cluster"].pop("stragglers")
    data["workload"].update(global_batch=64, steps=2)
    out = tmp_path / "run"
    assert hwsim("run", str(_write(tmp_path, data)), "--out", str(out)).returncode == 0
    p = hwsim("report", str(out))
    assert p.returncode == 0, p.stderr
    html = (out / "report.html").read_text()
    assert "Step 1 of the streams of all 32 simulated devices" in html
    assert '<p class="headline">step time: ' in html  # the report's headline is the CLI's
