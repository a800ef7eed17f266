"""Bad input through the real command line: a non-zero exit and one paragraph naming the file,
the field and the valid choices; never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD_NODE = "{gpu: A100-SXM4-80GB, gpus_per_node: 2, intra_node: nvlink3}"
WORKLOAD = "workload: {kind: training, model: {preset: mlp, width: 64, depth: 1}, global_batch: 8}\n"

CASES = {
    "unknown-device": (
        f"name: x\ncluster:\n  node: {{gpu: A100-SXM-80GB, gpus_per_node: 1}}\n{WORKLOAD}",
        [r"cluster\.node\.gpu", r"unknown device id 'A100-SXM-80GB'", "did you mean 'A100-SXM4-80GB'"]),
    "misspelled-key": (
        f"name: x\ncluster:\n  node: {GOOD_NODE}\n  fabirc: {{topology: fat-tree}}\n{WORKLOAD}",
        [r"cluster\.fabirc", "unknown key 'fabirc'", "did you mean 'fabric'"]),
    "negative-bandwidth": (
        "name: x\ncluster:\n  graph:\n    nodes: [{id: a, kind: gpu, spec: A100-SXM4-80GB}, {id: s, kind: switch}]\n"
        "    links: [{a: a, b: s, link: eth-100g, bw: -5 GB/s}]\n" + WORKLOAD,
        [r"cluster\.graph\.links\[0\]\.bw", "greater than 0"]),
    "disconnected-graph": (
        "name: x\ncluster:\n  graph:\n    nodes: [{id: a, kind: gpu, spec: A100-SXM4-80GB}, "
        "{id: b, kind: gpu, spec: A100-SXM4-80GB}, {id: s, kind: switch}]\n"
        "    links: [{a: a, b: s, link: eth-100g}]\n" + WORKLOAD,
        [r"cluster\.graph", "not connected", r"\{b\}"]),
    "failures-profile-and-mtbf": (
        f"name: x\ncluster:\n  node: {GOOD_NODE}\n" + WORKLOAD.replace(
            "global_batch: 8}", "global_batch: 8, failures: {profile: llama3, mtbf: {gpu: 50000 h}}}"),
        [r"workload\.failures: give profile or mtbf, not both"]),
    "failures-spares-without-repair": (
        f"name: x\ncluster:\n  node: {GOOD_NODE}\n" + WORKLOAD.replace(
            "global_batch: 8}", "global_batch: 8, failures: {spares: 2}}"),
        [r"workload\.failures\.spares: 2 needs repair", 'e.g. repair: "3 d"']),
    "checkpoint-unknown-storage": (
        f"name: x\ncluster:\n  node: {GOOD_NODE}\n" + WORKLOAD.replace(
            "global_batch: 8}", "global_batch: 8, checkpoint: {storage: scratch, every_steps: 2}}"),
        [r"workload\.checkpoint\.storage", "unknown storage 'scratch'", "valid: local"]),
    "checkpoint-async-host-memory": (
        "name: x\ncluster:\n  node: {gpu: A100-SXM4-80GB, gpus_per_node: 8, cpu_sockets: 1, "
        "local_storage: nvme-gen4}\nworkload: {kind: training, model: {preset: llama2-70b}, "
        "seq_len: 128, precision: bf16, global_batch: 8, checkpoint: {storage: local, "
        "every_steps: 2, mode: async}}\n",
        [r"workload\.checkpoint\.mode", r"async checkpoints stage 965\.7 GB in host memory",
         "valid: mode: sync"]),
    "malformed-yaml": ("name: x\ncluster: [1\n", ["malformed YAML at line 3"]),
    "jobs-too-many-devices": (
        f"name: x\ncluster:\n  node: {GOOD_NODE}\njobs:\n"
        "  - {name: a, devices: 2, workload: {kind: training, model: mlp, global_batch: 8}}\n"
        "  - {name: b, devices: 1, placement: spread, workload: {kind: training, model: mlp, "
        "global_batch: 8}}\n",
        [r"jobs\[1\]\.devices", "job 'b' asks for 1 gpu devices but only 0", "no queueing"]),
    "partial-device-id": (  # issue 12 item 8: every id listed, no suggestion
        f"name: x\ncluster:\n  node: {{gpu: A100, gpus_per_node: 1}}\n{WORKLOAD}",
        [r"cluster\.node\.gpu: unknown device id 'A100'; did you mean 'A100-SXM4-40GB', "
         r"'A100-SXM4-80GB' or 'A100-PCIe-80GB'\? \(every device id: `hwsim catalog devices`\)$"]),
    "size-for-bandwidth": (  # issue 12 item 8: units listed from EB/s, no suggestion
        "name: x\ncluster:\n  graph:\n    nodes: [{id: a, kind: gpu, spec: A100-SXM4-80GB}, {id: s, kind: switch}]\n"
        "    links: [{a: a, b: s, link: eth-100g, bw: 10 GB}]\n" + WORKLOAD,
        [r"cluster\.graph\.links\[0\]\.bw: unit 'GB' in '10 GB' is not a unit of bytes_per_s "
         r"\(GB measures bytes\); did you mean '10 GB/s'\? Valid units include: B/s, kB/s, MB/s"]),
    "bandwidth-for-size": (  # issue 12 item 8: request_bytes was blamed too
        "name: x\ncluster:\n  node: {gpu: A100-SXM4-80GB, gpus_per_node: 1, local_storage: nvme-gen4}\n"
        + WORKLOAD.replace("global_batch: 8}", "global_batch: 8, data: {storage: local, samples: 100, "
                           "sample_bytes: 110 kB/s}}"),
        [r"workload\.data\.sample_bytes: unit 'kB/s' in '110 kB/s' is not a unit of bytes "
         r"\(kB/s measures bytes_per_s\); did you mean '110 kB'\? Valid units include: B, kB, MB, "
         r"GB, TB, KiB, MiB, GiB, TiB, Gb \(bits\)$"]),
    "unknown-link": (
        f"name: x\ncluster:\n  node: {{gpu: A100-SXM4-80GB, gpus_per_node: 2, intra_node: nvlink9}}\n{WORKLOAD}",
        [r"cluster\.node\.intra_node", "unknown link id 'nvlink9'", "nvlink3"]),
}


def _hwsim(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from hwsim.cli import main; main()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_input_is_one_paragraph_with_file_and_field(tmp_path, case, command):
    text, patterns = CASES[case]
    (tmp_path / f"{case}.yaml").write_text(text)
    p = _hwsim(command, f"{case}.yaml", cwd=tmp_path)
    assert p.returncode == 1
    err = p.stderr.strip()
    assert "Traceback" not in p.stderr + p.stdout
    assert err.startswith(f"error: {case}.yaml: ")
    assert "\n" not in err
    for pat in patterns:
        assert __import__("re").search(pat, err), (pat, err)


def test_missing_file(tmp_path):
    p = _hwsim("run", "nope.yaml", cwd=tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "nope.yaml: no such scenario file" in p.stderr


def test_a_number_written_as_text_is_a_number(tmp_path):
    """``size: 1e13`` is a string to YAML 1.1 (no dot): it was rejected as "unit '' is not a
    unit of bytes" (issue 12 item 19); a unit-less number is in SI units, as a bare number is."""
    from hwsim.units import parse_quantity
    assert parse_quantity("1e13", "bytes") == parse_quantity(1e13, "bytes") == 1e13
    assert parse_quantity(" 25 ", "bytes_per_s") == 25.0 and parse_quantity("2E-3", "time") == 2e-3
    text = (ROOT / "scenarios" / "transfer-tiers.yaml").read_text()
    assert "size: 10 TB" in text
    (tmp_path / "t.yaml").write_text(text.replace("size: 10 TB", "size: 1e13"))
    p = _hwsim("validate", "t.yaml", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_a_bad_field_is_blamed_alone(tmp_path):
    """A bad ``sample_bytes`` also failed as ``request_bytes``, a field the user never wrote
    (issue 12 item 8: DataSpec copied the raw value into request_bytes before validation)."""
    text, _ = CASES["bandwidth-for-size"]
    (tmp_path / "d.yaml").write_text(text)
    err = _hwsim("validate", "d.yaml", cwd=tmp_path).stderr
    assert "sample_bytes" in err and "request_bytes" not in err and "; also" not in err, err
