"""Model presets (DESIGN.md "Catalog ids"), explicit architecture fields, and one entry point
from any model description to its ops.

Every architecture number cites its source: the paper's table or the model card's
``config.json``. Parameter counts these give (``spec.params()``, tested): gpt3-175b 174.6e9,
llama2-7b 6.74e9, llama2-13b 13.0e9, llama2-70b 68.98e9, llama3-8b 8.03e9, llama3-70b 70.6e9,
llama3-405b 405.9e9, mixtral-8x7b 46.7e9 total / 12.9e9 active, bert-large 336e6,
resnet50 25.56e6, dlrm 24.0e9.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

from hwsim.workloads.cnn import ResNetSpec, resnet_ops
from hwsim.workloads.dlrm import DLRMSpec, dlrm_ops
from hwsim.workloads.hf_config import spec_from_hf_config
from hwsim.workloads.mlp import mlp_ops
from hwsim.workloads.ops import ModelOps
from hwsim.workloads.transformer import TransformerSpec, transformer_ops

__all__ = ["MLPSpec", "ModelSpec", "PRESETS", "PRESET_NAMES", "get_preset", "spec_from_fields",
           "resolve_model", "model_ops", "param_count"]


@dataclass(frozen=True)
class MLPSpec:
    """An MLP (:func:`~hwsim.workloads.mlp.mlp_ops`); defaults are the scenario schema's
    preset ``mlp``. ``depth=0, outputs=1, activation="sigmoid"`` is logistic regression."""

    features: int = 1024
    width: int = 4096
    depth: int = 4
    outputs: int = 1024
    activation: str = "relu"
    name: str = "mlp"

    def params(self) -> float:
        dims = [self.features] + [self.width] * self.depth + [self.outputs]
        return float(sum(a * b + b for a, b in zip(dims, dims[1:])))


ModelSpec = Union[TransformerSpec, ResNetSpec, DLRMSpec, MLPSpec]

_LLAMA = dict(activation="swiglu", norm="rmsnorm", position="rope", bias=False, dropout=False)
PRESETS: dict[str, ModelSpec] = {
    "mlp": MLPSpec(),
    "logistic-regression": MLPSpec(features=100, width=1, depth=0, outputs=1,
                                   activation="sigmoid", name="logistic-regression"),
    # He et al. 2016 (arXiv 1512.03385) Table 1; v1.5 stride placement (torchvision)
    "resnet50": ResNetSpec(),
    # Devlin et al. 2019 (arXiv 1810.04805) Sec 3: L=24, H=1024, A=16; vocab, positions and
    # segments from google-research/bert uncased_L-24_H-1024_A-16/bert_config.json
    "bert-large": TransformerSpec(layers=24, hidden=1024, heads=16, vocab=30522, ffn_hidden=4096,
                                  seq_len=512, type_vocab=2, encoder=True, tied_embeddings=True,
                                  name="bert-large"),
    # Brown et al. 2020 (arXiv 2005.14165) Table 2.1: 96 layers, d_model 12288, 96 heads,
    # context 2048; GPT-2's 50257-token BPE (Radford et al. 2019), tied input/output embedding
    "gpt3-175b": TransformerSpec(layers=96, hidden=12288, heads=96, vocab=50257, seq_len=2048,
                                 tied_embeddings=True, name="gpt3-175b"),
    # Touvron et al. 2023 (arXiv 2307.09288) Table 1 and meta-llama/Llama-2-*-hf config.json
    "llama2-7b": TransformerSpec(layers=32, hidden=4096, heads=32, vocab=32000, ffn_hidden=11008,
                                 seq_len=4096, name="llama2-7b", **_LLAMA),
    "llama2-13b": TransformerSpec(layers=40, hidden=5120, heads=40, vocab=32000,
                                  ffn_hidden=13824, seq_len=4096, name="llama2-13b", **_LLAMA),
    "llama2-70b": TransformerSpec(layers=80, hidden=8192, heads=64, kv_heads=8, vocab=32000,
                                  ffn_hidden=28672, seq_len=4096, name="llama2-70b", **_LLAMA),
    # Llama Team 2024, "The Llama 3 Herd of Models" (arXiv 2407.21783) Table 3 (pre-training
    # sequence 8192); vocab 128256 from meta-llama/Meta-Llama-3-8B config.json
    "llama3-8b": TransformerSpec(layers=32, hidden=4096, heads=32, kv_heads=8, vocab=128256,
                                 ffn_hidden=14336, seq_len=8192, name="llama3-8b", **_LLAMA),
    "llama3-70b": TransformerSpec(layers=80, hidden=8192, heads=64, kv_heads=8, vocab=128256,
                                  ffn_hidden=28672, seq_len=8192, name="llama3-70b", **_LLAMA),
    "llama3-405b": TransformerSpec(layers=126, hidden=16384, heads=128, kv_heads=8,
                                   vocab=128256, ffn_hidden=53248, seq_len=8192,
                                   name="llama3-405b", **_LLAMA),
    # Jiang et al. 2024, "Mixtral of Experts" (arXiv 2401.04088) Table 1: dim 4096, 32 layers,
    # 32 heads, 8 KV heads, FFN 14336, 8 experts, top-2, vocab 32000, context 32768
    "mixtral-8x7b": TransformerSpec(layers=32, hidden=4096, heads=32, kv_heads=8, vocab=32000,
                                    ffn_hidden=14336, seq_len=32768, experts=8, top_k=2,
                                    name="mixtral-8x7b", **_LLAMA),
    # MLPerf Training DLRM on Criteo Terabyte (facebookresearch/dlrm, see dlrm.py)
    "dlrm": DLRMSpec(),
}
PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str) -> ModelSpec:
    """The spec of preset *name* (case-insensitive); ValueError lists the valid names."""
    try:
        return PRESETS[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; valid presets: "
                         f"{', '.join(PRESET_NAMES)}") from None


def spec_from_fields(*, layers: int, hidden: int, heads: int, vocab: int,
                     kv_heads: int | None = None, ffn_hidden: int | None = None,
                     activation: str = "gelu", seq_len: int = 2048,
                     name: str = "transformer", **more: Any) -> TransformerSpec:
    """A decoder from DESIGN.md's explicit fields. A gated or SiLU activation (``swiglu``,
    ``geglu``, ``silu``) means a Llama-style model (RMSNorm, RoPE, no biases or dropout);
    ``gelu``/``relu`` a GPT-style one (LayerNorm, learned positions, biases, dropout). Other
    :class:`TransformerSpec` fields may be given in *more* and win."""
    style = _LLAMA if activation in ("swiglu", "geglu", "silu") else {}
    style = {k: v for k, v in style.items() if k != "activation"}
    return TransformerSpec(layers=layers, hidden=hidden, heads=heads, vocab=vocab,
                           kv_heads=kv_heads, ffn_hidden=ffn_hidden, activation=activation,
                           seq_len=seq_len, name=name, **{**style, **more})


_MLP_KEYS = ("features", "width", "depth", "outputs", "activation")


def resolve_model(model: str | Mapping[str, Any]) -> ModelSpec:
    """A spec from a scenario's ``workload.model``: a preset name, ``{preset: ...}`` (preset
    ``mlp``/``logistic-regression`` may override its MLP fields), ``{hf_config: path}``, or
    explicit transformer fields (:func:`spec_from_fields`)."""
    if isinstance(model, str):
        return get_preset(model)
    d = {k: v for k, v in dict(model).items() if v is not None}
    if "preset" in d:
        spec = get_preset(d.pop("preset"))
        if isinstance(spec, MLPSpec):
            fields = {k: d.pop(k) for k in _MLP_KEYS if k in d}
            spec = MLPSpec(**{**spec.__dict__, **fields})
        if d:
            raise ValueError(f"fields {', '.join(sorted(d))} cannot be used with preset "
                             f"{spec.name!r}")
        return spec
    if "hf_config" in d:
        return spec_from_hf_config(Path(d["hf_config"]))
    try:
        return spec_from_fields(**d)
    except TypeError as err:
        raise ValueError(f"model: give a preset ({', '.join(PRESET_NAMES)}), hf_config, or "
                         f"explicit fields layers, hidden, heads, vocab (+ kv_heads, ffn_hidden, "
                         f"activation); {err}") from None


def model_ops(spec: ModelSpec, *, micro_batch: int, precision: str = "bf16",
              seq_len: int | None = None, tp: int = 1, sp: bool = False, cp: int = 1,
              ep: int = 1, recompute: str = "none", optimizer: str = "adam",
              flash_attention: bool = True, fp8_recipe: Any = None,
              tp_overlap: bool = False, fp4_recipe: Any = None,
              fp8_transpose: bool = True) -> ModelOps:
    """The ops of one rank for a micro-batch, for any spec. Transformers take every argument
    (:func:`~hwsim.workloads.transformer.transformer_ops`); DLRM spreads its tables over ``ep``
    ranks (``mp_ranks``); ResNet and MLP run data parallel only (``tp = cp = ep = 1``,
    no recompute)."""
    if isinstance(spec, TransformerSpec):
        return transformer_ops(spec, micro_batch=micro_batch, seq_len=seq_len,
                               precision=precision, tp=tp, sp=sp, cp=cp, ep=ep,
                               recompute=recompute, flash_attention=flash_attention,
                               optimizer=optimizer, fp8_recipe=fp8_recipe,
                               tp_overlap=tp_overlap, fp4_recipe=fp4_recipe,
                               fp8_transpose=fp8_transpose)
    limits = {"tp": tp, "cp": cp, "ep": ep if not isinstance(spec, DLRMSpec) else 1}
    bad = [f"{k}={v}" for k, v in limits.items() if v != 1]
    bad += ["sequence parallelism"] if sp else []
    bad += [f"recompute={recompute!r}"] if recompute != "none" else []
    if bad:
        raise ValueError(f"{', '.join(bad)} not supported for model {spec.name!r} (a "
                         f"{type(spec).__name__}); valid: tp=1, cp=1, no sequence parallelism, "
                         f"recompute='none'" + ("" if isinstance(spec, DLRMSpec) else ", ep=1"))
    if isinstance(spec, ResNetSpec):
        return resnet_ops(spec, batch=micro_batch, precision=precision, optimizer=optimizer)
    if isinstance(spec, DLRMSpec):
        return dlrm_ops(spec, batch=micro_batch, precision=precision, mp_ranks=ep,
                        optimizer=optimizer)
    return mlp_ops(features=spec.features, width=spec.width, depth=spec.depth,
                   outputs=spec.outputs, activation=spec.activation, batch=micro_batch,
                   precision=precision, optimizer=optimizer)


def param_count(spec: ModelSpec) -> float:
    """Total parameters of *spec* (all experts, all embedding rows)."""
    return float(spec.params())
