"""The software stack's memory overheads (hwsim/catalog/data/stacks.yaml main_grads,
cuda_context_bytes, nccl_buffer_bytes): fp32 main gradients, the CUDA context and NCCL
buffers as lines of the per-device breakdown, counted in memory_per_device_gb and the fits test.

No published per-device memory figure of a shipped scenario is in the project's calibration data
(the calibration data the project copies from has none), so no end-to-end comparison is made here."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwsim.catalog.stacks import MAIN_GRADS, get_stack, load_stacks, parse_stacks_file
from hwsim.exceptions import ScenarioError
from hwsim.scenario import load_scenario
from hwsim.scenario.build import build_graph, run_scenario, training_plan
from hwsim.workloads import training_memory
from hwsim.workloads.memory import state_bytes

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
STACKS = Path(__file__).resolve().parent.parent / "hwsim/catalog/data/stacks.yaml"
MIB = 1024 ** 2


def _breakdown(name: str, **workload) -> dict[str, float]:
    s = load_scenario(SCENARIOS / name)
    if workload:
        raw = s.model_dump(exclude_none=True)
        raw["workload"].update(workload)
        s = load_scenario(raw)
    plan = training_plan(s, build_graph(s.cluster))
    mem = plan.memory
    return dict(max(mem, key=lambda m: sum(m.values())) if isinstance(mem, tuple) else mem)


def test_every_stack_names_its_overheads_with_sources():
    for name, p in load_stacks().profiles.items():
        assert p.main_grads in MAIN_GRADS
        assert p.cuda_context_bytes == 1343 * MIB  # [HF-MEM]
        assert p.nccl_buffer_bytes == 2 * 2 * 4 * MIB  # [NCCL-ENV]: 2 connections x 2 channels
        for k in ("main_grads", "cuda_context_bytes", "nccl_buffer_bytes"):
            assert p.sources[k].strip(), (name, k)


def test_fp32_main_grads_double_a_bf16_gradient_line():
    bf16 = state_bytes(1e9, precision="bf16")
    fp32 = state_bytes(1e9, precision="bf16", grad_bytes=4.0)
    assert fp32["gradients"] == 2 * bf16["gradients"] == 4e9
    assert fp32["weights"] == bf16["weights"] and fp32["optimizer_states"] == bf16["optimizer_states"]
    # sharded as gradients are (ZeRO-2/3)
    assert state_bytes(1e9, precision="bf16", grad_bytes=4.0, dp=8, zero=2)["gradients"] == 0.5e9


@pytest.mark.parametrize("stack, precision, fp32", [
    ("megatron-core", "bf16", False), ("megatron-core", "fp8", False),  # NeMo: bf16 grads
    ("megatron-2021", "fp16", False), ("megatron-2021", "bf16", True),
    ("megatron-2020", "fp16", False), ("llm-foundry-2023", "bf16", True),
    ("pytorch-amp", "fp16", True), ("pytorch-amp", "fp32", False)])
def test_main_gradient_precision_follows_the_stack(stack, precision, fp32):
    o = get_stack(stack).memory_overheads(precision, "gpu", 1)
    assert o["grad_bytes"] == (4.0 if fp32 else None)


def test_context_and_buffers_only_on_gpus_and_per_communicator():
    st = get_stack("megatron-core")
    assert st.memory_overheads("bf16", "gpu", 3)["comm_buffer_bytes"] == 3 * st.nccl_buffer_bytes
    assert st.memory_overheads("bf16", "gpu", 0)["comm_buffer_bytes"] == 0.0
    for kind in ("cpu", "tpu"):
        o = st.memory_overheads("bf16", kind, 3)
        assert o["context_bytes"] == o["comm_buffer_bytes"] == 0.0


def test_lines_present_where_the_stack_says_and_sums_add_up():
    dp = _breakdown("mlp-dp-nvlink.yaml")  # 8 GPUs, data parallel: one communicator
    st = get_stack("pytorch-amp")
    assert dp["context"] == st.cuda_context_bytes
    assert dp["comm_buffers"] == st.nccl_buffer_bytes
    one = _breakdown("quickstart.yaml")  # one GPU: a context, no communicator
    assert "context" in one and "comm_buffers" not in one
    cpu = _breakdown("gpt-350m-8xepyc-cpu.yaml")  # CPUs: neither
    assert "context" not in cpu and "comm_buffers" not in cpu
    d3 = _breakdown("gpt-1.3b-3d-8xa100.yaml")
    s = load_scenario(SCENARIOS / "gpt-1.3b-3d-8xa100.yaml")
    par = s.workload.parallelism
    comms = sum(d > 1 for d in (par.tp, par.pp, 8 // (par.tp * par.pp)))
    assert d3["comm_buffers"] == comms * get_stack("megatron-core").nccl_buffer_bytes
    # without the overheads the breakdown has neither line
    plain = training_memory(_plain_ops())
    assert "context" not in plain and "comm_buffers" not in plain


def _plain_ops():
    from hwsim.workloads import model_ops, resolve_model
    return model_ops(resolve_model({"preset": "mlp"}), micro_batch=8, precision="bf16")


def test_summary_counts_the_new_lines_in_memory_per_device_gb():
    s = run_scenario(load_scenario(SCENARIOS / "mlp-dp-nvlink.yaml")).summary
    parts = {k: v for k, v in s.items() if k.startswith("memory_") and k.endswith("_gb")
             and k not in ("memory_per_device_gb", "memory_capacity_per_device_gb")}
    assert s["memory_context_gb"] == pytest.approx(1343 * MIB / 1e9)
    assert s["memory_comm_buffers_gb"] == pytest.approx(16 * MIB / 1e9)
    assert s["memory_per_device_gb"] == pytest.approx(sum(parts.values()), rel=1e-12)


def test_does_not_fit_message_names_the_overheads():
    """The "does not fit" reason is built from the same breakdown: its need is
    memory_per_device_gb, overheads included, and it lists the context and NCCL buffers."""
    s = load_scenario({
        "name": "llama2-70b-2xa100", "seed": 0,
        "cluster": {"nodes": 1, "node": {"gpu": "A100-SXM4-80GB", "gpus_per_node": 2,
                                         "intra_node": "nvlink3"}},
        "workload": {"kind": "training", "model": {"preset": "llama2-70b"}, "seq_len": 2048,
                     "precision": "bf16", "global_batch": 8, "steps": 1}})
    summary = run_scenario(s).summary
    assert summary["fits"] is False
    assert summary["memory_context_gb"] == pytest.approx(1343 * MIB / 1e9)
    assert summary["memory_comm_buffers_gb"] == pytest.approx(16 * MIB / 1e9)
    # megatron-core (the default) as NeMo runs it: bf16 gradients, the bf16 weights' line
    assert summary["memory_gradients_gb"] == pytest.approx(summary["memory_weights_gb"])
    label = summary["bottleneck_label"]
    assert label.startswith("does not fit: ") and "context 1.41 GB" in label
    assert "comm buffers 16.8 MB" in label


def test_bad_main_grads_is_one_paragraph_naming_the_file_and_field(tmp_path):
    bad = tmp_path / "stacks.yaml"
    bad.write_text(STACKS.read_text().replace("main_grads: fp32-with-bf16", "main_grads: fp16", 1))
    with pytest.raises(ScenarioError) as ei:
        parse_stacks_file(bad)
    msg = str(ei.value)
    assert "main_grads" in msg and "training, fp32, fp32-with-bf16" in msg and str(bad) in msg
