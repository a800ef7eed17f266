"""NVFP4 training (issue 16 point 3): the megatron-core stack's ``te-nvfp4`` recipe, which ops it
runs in FP4 (NVIDIA, "Pretraining Large Language Models with NVFP4", arXiv 2509.25149: the linear
layers' fprop, dgrad and wgrad GEMMs; attention, norms, embedding and output layer in BF16), its
quantisation passes and Hadamard transforms, that it never trains slower than FP8 on FP4
hardware, and the errors for FP4 training where it cannot run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import hwsim
from hwsim.catalog.stacks import get_stack, load_stacks, parse_stacks_file
from hwsim.exceptions import ScenarioError
from hwsim.workloads.ops import NVFP4_BYTES
from hwsim.workloads.presets import model_ops, resolve_model

LINEARS = ("qkv", "out_proj", "ffn_up", "ffn_down")
GEMMS = ("", ".dgrad", ".wgrad")
STACKS = Path(hwsim.__file__).parent / "catalog" / "data" / "stacks.yaml"


def _ops(precision: str = "fp4", recipe=None, preset: str = "llama3-70b", **kw):
    st = get_stack("megatron-core")
    return model_ops(resolve_model({"preset": preset}), micro_batch=1, precision=precision,
                     seq_len=8192, fp8_recipe=st.fp8_recipe,
                     fp4_recipe=recipe or st.fp4_recipe, **kw)


def _every(ops):
    return [o for b in ops.blocks for o in (*b.forward, *b.backward)]


def test_the_recipe_runs_every_linear_gemm_of_every_layer_in_fp4_and_nothing_else():
    ops = _every(_ops())
    fp4 = {o.name for o in ops if o.dtype == "fp4"}
    want = {f"layer{i}.{lin}{g}" for i in range(80) for lin in LINEARS for g in GEMMS}
    assert fp4 == want and len(fp4) == 80 * 4 * 3
    # attention (score and value products), the output layer and every other matmul: bf16
    other = [o for o in ops if o.matmul and o.dtype != "fp4"]
    assert other and {o.dtype for o in other} == {"bf16"}
    assert any(o.name == "layer0.attention" for o in other)
    assert any(o.name == "head.logits" for o in other)
    # the GEMMs read NVFP4 operands (4-bit values + an E4M3 scale per 16)
    qkv = next(o for o in ops if o.name == "layer3.qkv")
    m, n, k = qkv.shape[1:]
    assert qkv.bytes == pytest.approx(NVFP4_BYTES * (m * k + k * n) + 2 * m * n)


def test_bf16_layers_of_a_recipe_keep_their_linears_in_bf16():
    st = get_stack("megatron-core")
    paper = dataclasses.replace(st.fp4_recipe, bf16_first_layers=2, bf16_last_layers=8)
    ops = _every(_ops(recipe=paper))
    fp4_layers = {o.name.split(".")[0] for o in ops if o.dtype == "fp4"}
    assert fp4_layers == {f"layer{i}" for i in range(2, 72)}
    assert sum(o.dtype == "fp4" for o in ops) == (80 - 10) * 12
    for i in (0, 1, 72, 79):  # no FP4 GEMM, no quantisation pass, no NVFP4 weight cast
        assert not [o for o in ops if o.name.startswith(f"layer{i}.") and "nvfp4" in o.name]
    assert all(o.dtype == "bf16" for o in ops if o.name.startswith("layer79.") and o.matmul)


def test_each_nvfp4_gemm_input_takes_an_amax_and_a_cast_pass_with_the_hadamard_transform():
    ops = {o.name: o for o in _every(_ops())}
    x = ops["layer5.ffn_down"]
    m, _, k = x.shape[1:]                     # forward GEMM ("gemm", M, N, K): X is M x K
    amax, cast = ops["layer5.ffn_down.nvfp4_amax"], ops["layer5.ffn_down.nvfp4_cast"]
    assert amax.bytes == pytest.approx(2 * m * k)
    assert cast.bytes == pytest.approx((2 + 2 * NVFP4_BYTES) * m * k)
    assert amax.flops == cast.flops == pytest.approx(2 * 16 * m * k)   # 16-point RHT
    assert "layer5.ffn_down.grad.nvfp4_cast" in ops and "layer5.ffn_down.grad.nvfp4_amax" in ops
    assert "layer5.nvfp4_weight_cast" in ops
    assert not any("fp8" in name for name in ops)   # no FP8 casts, no amax history
    no_rht = dataclasses.replace(get_stack("megatron-core").fp4_recipe, hadamard_wgrad=False)
    plain = {o.name: o for o in _every(_ops(recipe=no_rht))}
    assert plain["layer5.ffn_down.nvfp4_cast"].flops == 0.0
    assert plain["layer5.ffn_down.nvfp4_cast"].bytes == cast.bytes


WIDE8 = {"layers": 8, "hidden": 8192, "heads": 64, "kv_heads": 8, "ffn_hidden": 28672,
         "vocab": 128256, "activation": "swiglu", "dropout": False}
"""Eight layers of Llama 3 70B's width (the layers of Megatron-Bridge's 70B NVFP4 rows)."""


def _scenario(gpu: str, precision: str, *, tp: int = 1, gpn: int = 8, model=None,
              seq_len: int = 4096):
    return {"name": "fp4", "seed": 0,
            "cluster": {"nodes": 1, "node": {"gpu": gpu, "gpus_per_node": gpn,
                                             "intra_node": "nvlink5"}},
            "workload": {"kind": "training", "model": model or {"preset": "llama3-8b"},
                         "seq_len": seq_len,
                         "precision": precision, "global_batch": 4 * gpn // tp,
                         "parallelism": {"tp": tp, "pp": 1, "micro_batch": 1,
                                         "sequence_parallel": tp > 1, "zero": 1},
                         "optimizer": "adamw", "steps": 2, "stack": "megatron-core"},
            "outputs": {"events": False, "utilization": False, "trace": False}}


@pytest.mark.parametrize("gpu,tp,gpn", [("B200", 1, 8), ("B200", 2, 8), ("B300", 1, 8),
                                        ("GB200", 2, 4), ("GB300", 4, 4)])
def test_fp4_is_never_slower_than_fp8_for_the_same_layout(monkeypatch, gpu, tp, gpn):
    """The same layout and the same stack settings (the recipe's TP overlap as the stack's), on
    layers of the width Megatron-Bridge trains in NVFP4 (Llama 3 70B, sequence 8192): NVFP4 GEMMs
    at 2-3x the FP8 peak outweigh the amax and cast passes, at every TP degree, on every NVFP4
    GPU of the catalog. (On small GEMMs they need not: docs/model.md "NVFP4 recipe".)"""
    profiles = load_stacks().profiles
    core = profiles["megatron-core"]
    same = dataclasses.replace(core.fp4_recipe, tp_comm_overlap=core.tp_comm_overlap)
    monkeypatch.setitem(profiles, "megatron-core", dataclasses.replace(core, fp4_recipe=same))
    fp8, fp4 = (hwsim.run(_scenario(gpu, p, tp=tp, gpn=gpn, model=WIDE8, seq_len=8192)).summary
                for p in ("fp8", "fp4"))
    assert fp4["fits"] and fp8["fits"]
    assert fp4["step_time_s"] < fp8["step_time_s"]
    # and it is no miracle: the GEMMs are a share of the step, far from the 2-3x of the peaks
    assert fp8["step_time_s"] / fp4["step_time_s"] < 2.0


def test_the_recipes_tp_overlap_off_can_cost_more_than_fp4_gains_at_high_tp():
    """Megatron-Bridge's NVFP4 recipe turns TP communication overlap off (stacks.yaml
    te-nvfp4 tp_comm_overlap, [MB-2602]): with TP 1 nothing changes and FP4 is faster; on a
    small model at TP 4, where the TP collectives are a large share of the step, the exposed
    collectives cost more than the FP4 GEMMs save (a prediction, reported in docs/model.md)."""
    assert get_stack("megatron-core").fp4_recipe.tp_comm_overlap is False
    tp1 = [hwsim.run(_scenario("GB300", p, tp=1, gpn=4)).summary["step_time_s"]
           for p in ("fp8", "fp4")]
    assert tp1[1] < tp1[0]
    tp4 = [hwsim.run(_scenario("GB300", p, tp=4, gpn=4)).summary["step_time_s"]
           for p in ("fp8", "fp4")]
    assert tp4[1] > tp4[0]


def test_fp4_training_on_a_gpu_without_fp4_tensor_cores_is_one_clear_paragraph():
    with pytest.raises(ScenarioError) as e:
        hwsim.run(_scenario("H100-SXM5-80GB", "fp4"))
    assert str(e.value) == (
        "workload.precision: precision: fp4 (NVFP4 training, stack 'megatron-core', recipe "
        "'te-nvfp4') cannot run on device 'H100-SXM5-80GB': it has no FP4 tensor cores "
        "(devices.yaml lists no fp4 peak for it); valid: a GPU with NVFP4 tensor cores (B200, "
        "B300, GB200, GB300), or precision: fp8 or bf16 on this device")
    assert "\n" not in str(e.value)


def test_fp4_training_on_mxfp4_hardware_is_refused():
    with pytest.raises(ScenarioError, match="its fp4 units run MXFP4, not the NVFP4 format"):
        hwsim.run(_scenario("MI355X", "fp4"))


def test_fp4_training_on_a_stack_without_an_fp4_recipe_names_the_stacks_that_have_one():
    raw = _scenario("B200", "fp4")
    raw["workload"]["stack"] = "torchtitan"
    with pytest.raises(ScenarioError) as e:
        hwsim.run(raw)
    assert str(e.value) == (
        "workload.precision: precision: fp4 trains the linear layers' GEMMs in NVFP4, which "
        "needs a software stack with an FP4 recipe, and stack 'torchtitan' has none "
        "(fp4_recipe: none in hwsim/catalog/data/stacks.yaml); valid: workload.stack: "
        "megatron-core, or precision: fp8 or bf16")


@pytest.mark.parametrize("old,new,field,msg", [
    ("    fp4_recipe: te-nvfp4\n", "    fp4_recipe: te-nvfp5\n",
     "stacks.megatron-core.fp4_recipe", "expected none or a recipe of fp4_recipes: te-nvfp4"),
    ("    hadamard_size: 16\n", "    hadamard_size: 1\n",
     "fp4_recipes.te-nvfp4.hadamard_size", "expected an integer >= 2, got 1"),
    ("    bf16_last_layers: 0\n", "    bf16_last_layers: -1\n",
     "fp4_recipes.te-nvfp4.bf16_last_layers", "expected an integer >= 0, got -1"),
])
def test_fp4_recipe_file_errors_name_the_field(tmp_path, old, new, field, msg):
    text = STACKS.read_text()
    assert text.count(old) == 1
    bad = tmp_path / "stacks.yaml"
    bad.write_text(text.replace(old, new))
    with pytest.raises(ScenarioError) as e:
        parse_stacks_file(bad)
    assert field in str(e.value) and msg in str(e.value)


def test_every_fp4_recipe_choice_has_a_source(tmp_path):
    text = STACKS.read_text()
    line = next(x for x in text.splitlines(keepends=True)
                if x.strip().startswith("hadamard_wgrad: \"[NVFP4]"))
    bad = tmp_path / "stacks.yaml"
    bad.write_text(text.replace(line, ""))
    with pytest.raises(ScenarioError, match="fp4_recipes.te-nvfp4.sources.hadamard_wgrad"):
        parse_stacks_file(bad)
