"""Software-stack profiles (hwsim/catalog/stacks.py, data/stacks.yaml): loading, the unknown-stack
error, the attention kernel a stack runs per GPU, and fitted constants that name their rows."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from hwsim.catalog import get_device
from hwsim.catalog.stacks import load_stacks, get_stack, parse_stacks_file
from hwsim.exceptions import ScenarioError
from report_checks import load_benchmark

STACKS = ("megatron-2020", "megatron-2021", "llm-foundry-2023", "pytorch-amp", "megatron-core")
H100, A100, V100 = "H100-SXM5-80GB", "A100-SXM4-80GB", "V100-SXM2-32GB"


def test_profiles_load_with_sources_and_defaults():
    s = load_stacks()
    assert set(STACKS) <= set(s.profiles)
    assert s.default == {"transformer": "megatron-core", "other": "pytorch-amp"}
    for p in s.profiles.values():
        assert 0 < p.compute_factor <= 1 and 0 < p.memory_factor <= 1
        assert all(p.sources[k] for k in ("attention", "compute_factor", "memory_factor"))
        assert p.description


@pytest.mark.parametrize("name,gpu,family", [
    ("megatron-core", H100, "fa3"), ("megatron-core", A100, "fa2"), ("megatron-core", V100, None),
    ("llm-foundry-2023", H100, "fa2"), ("llm-foundry-2023", A100, "fa2"),
    ("megatron-2021", A100, None), ("megatron-2020", V100, None), ("pytorch-amp", A100, None)])
def test_attention_family_per_stack_and_gpu(name, gpu, family):
    st, dev = get_stack(name), get_device(gpu)
    assert st.attention_family(dev) == family
    assert st.fused_attention(dev) is (family is not None)
    run = st.apply(dev)
    assert run.kernels.attention_kernel == family
    assert run.framework_compute_factor == st.compute_factor


def test_fa2_on_h100_is_slower_than_fa3_by_the_papers_ratio():
    """An attention kernel on H100: FlashAttention-2 at 35 % of peak against FlashAttention-3's
    75 % ([FA3] abstract); same stack otherwise."""
    core = get_stack("megatron-core")
    fa2 = dataclasses.replace(core, attention=("fa2",))
    shape = ("attention", 64 * 32, 4096, 4096, 128)
    flops = 4 * 64 * 32 * 4096 * 4096 * 128
    t3 = core.apply(get_device(H100)).op_time_s(flops, 1e6, "bf16", shape=shape)
    t2 = fa2.apply(get_device(H100)).op_time_s(flops, 1e6, "bf16", shape=shape)
    assert t2 / t3 == pytest.approx(0.748 / 0.35, rel=0.02)


def _llm(stack: str | None, gpu: str = H100) -> dict:
    w = {"kind": "training", "precision": "bf16", "global_batch": 4, "seq_len": 4096, "steps": 2,
         "model": {"layers": 2, "hidden": 2048, "heads": 16, "vocab": 32000}}
    if stack:
        w["stack"] = stack
    return {"name": "t", "seed": 0, "cluster": {"nodes": 1, "node": {"gpu": gpu,
                                                                      "gpus_per_node": 1}},
            "workload": w, "outputs": {"events": False, "utilization": False, "trace": False}}


def test_fa2_vs_fa3_moves_h100_step_time_the_right_way(monkeypatch):
    """The same stack with FlashAttention-3 instead of -2 trains faster on an H100 and the same
    on an A100 (which lists FlashAttention-2 only)."""
    import hwsim

    profiles = load_stacks().profiles
    foundry = profiles["llm-foundry-2023"]

    def step(gpu: str) -> float:
        return hwsim.run(_llm("llm-foundry-2023", gpu)).summary["step_time_s"]
    fa2 = {g: step(g) for g in (H100, A100)}
    monkeypatch.setitem(profiles, "llm-foundry-2023",
                        dataclasses.replace(foundry, attention=("fa3", "fa2")))
    fa3 = {g: step(g) for g in (H100, A100)}
    assert fa3[H100] < 0.97 * fa2[H100]
    assert fa3[A100] == pytest.approx(fa2[A100], rel=1e-9)


def test_the_default_stack_is_megatron_core_for_transformers():
    import hwsim

    default = hwsim.run(_llm(None)).summary["step_time_s"]
    assert default == pytest.approx(hwsim.run(_llm("megatron-core")).summary["step_time_s"])
    assert default < hwsim.run(_llm("llm-foundry-2023")).summary["step_time_s"]


def test_unknown_stack_is_one_paragraph_naming_the_valid_ones(tmp_path):
    from hwsim.scenario.loader import load_scenario

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(_llm("megatron-2099")))
    with pytest.raises(ScenarioError) as info:
        load_scenario(p)
    text = str(info.value)
    assert "workload.stack" in text and str(p) in text and "megatron-2099" in text
    assert all(n in text for n in STACKS) and "\n" not in text.strip()
    assert "Traceback" not in text


def test_each_fitted_constant_names_at_least_two_rows_of_its_stack():
    vt = load_benchmark("validate_training")
    cases = {c.id: c for c in vt.load_cases()}
    for p in load_stacks().profiles.values():
        if p.stand_in_for is not None:  # a stand-in says whose value it takes
            assert p.compute_factor == get_stack(p.stand_in_for).compute_factor
            assert p.stand_in_for in p.sources["compute_factor"]
            if p.fitted_field == "compute_factor":  # and, fitting nothing else, names no rows
                assert not p.fitted_to
                continue
        assert len(p.fitted_to) >= 2, p.name
        assert all(cases[r].stack == p.name for r in p.fitted_to), p.name
        value = getattr(p, p.fitted_field)
        text = f"{value:.4f}" if p.fitted_field == "compute_factor" else f"{value * 1e6:.1f} us"
        assert text in p.sources[p.fitted_field], p.name


def test_a_fitted_field_other_than_the_compute_factor_needs_rows_and_a_value(tmp_path):
    base = yaml.safe_load(BASE)
    a = base["stacks"]["a"]
    a.update(stand_in_for="a", fitted_field="zero3_rank_host_s", zero3_rank_host_s=1e-5)
    a["sources"]["zero3_rank_host_s"] = "s"
    a["fitted_to"] = ["r1"]
    p = tmp_path / "stacks.yaml"
    p.write_text(yaml.safe_dump(base))
    with pytest.raises(ScenarioError, match="a fitted zero3_rank_host_s names at least two rows"):
        parse_stacks_file(p)
    a["fitted_field"] = "memory_factor"
    a["fitted_to"] = ["r1", "r2"]
    p.write_text(yaml.safe_dump(base))
    with pytest.raises(ScenarioError, match="fitted_field.*expected one of compute_factor, "
                                            "zero3_rank_host_s"):
        parse_stacks_file(p)


BASE = """default: {transformer: a, other: a}
stacks:
  a:
    description: x
    attention: [fa2]
    compute_factor: 0.7
    memory_factor: 1.0
    fitted_to: [r1, r2]
    main_grads: training
    cuda_context_bytes: 1000
    nccl_buffer_bytes: 1000
    sources: {attention: s, compute_factor: s, memory_factor: s, main_grads: s,
              cuda_context_bytes: s, nccl_buffer_bytes: s}
"""


@pytest.mark.parametrize("old,new,field,msg", [
    ("[fa2]", "[fa9]", "stacks.a.attention", "order of preference"),
    ("[r1, r2]", "[r1]", "stacks.a.fitted_to", "at least two rows"),
    ("compute_factor: 0.7", "compute_factor: 1.7", "stacks.a.compute_factor", r"\(0, 1\]"),
    ("compute_factor: s,", "", "stacks.a.sources.compute_factor", "needs a source"),
    ("other: a", "other: b", "default.other", "not a stack"),
])
def test_stacks_file_errors_name_file_and_field(tmp_path, old, new, field, msg):
    p = tmp_path / "stacks.yaml"
    p.write_text(BASE.replace(old, new))
    with pytest.raises(ScenarioError, match=msg) as info:
        parse_stacks_file(p)
    assert str(p) in str(info.value) and field in str(info.value)
    (tmp_path / "ok.yaml").write_text(BASE)
    assert parse_stacks_file(tmp_path / "ok.yaml").profiles["a"].attention == ("fa2",)
