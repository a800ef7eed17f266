"""A :class:`~hwsim.workloads.transformer.TransformerSpec` from a Hugging Face ``config.json``:
architecture fields only (no weights, no network).

Read fields, by ``model_type`` (their names in ``transformers``' config classes):
``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``,
``intermediate_size``, ``vocab_size``, ``max_position_embeddings``, ``num_local_experts``,
``num_experts_per_tok``, ``hidden_act``, ``tie_word_embeddings``, and the GPT-2 (``n_layer``,
``n_embd``, ``n_head``, ``n_inner``, ``n_positions``, ``activation_function``), OPT (``ffn_dim``),
BERT (``type_vocab_size``) and Falcon (``num_kv_heads``, ``multi_query``,
``new_decoder_architecture``, ``ffn_hidden_size``, ``alibi``, ``bias``) spellings. BLOOM
(``bloom``: ``n_layer``, ``n_head``, ``hidden_size`` or ``n_embed``) is a GPT-2-style decoder
with ALiBi, biases, tied embeddings and a 4 x hidden GELU MLP (BigScience tr11-176B-ml README). What the
config does not say follows the family's architecture: Llama-like models (llama, mistral,
mixtral, qwen2, qwen2_moe) use a gated MLP (``silu`` -> SwiGLU), RMSNorm, RoPE, no biases, no
dropout. Qwen2's QKV biases and GPT-NeoX's parallel residual are not modelled.

Mixture-of-experts keys (``transformers``' config classes): Mixtral ``num_local_experts`` ->
``experts``, ``num_experts_per_tok`` -> ``top_k`` (every layer MoE, experts of
``intermediate_size``). Qwen2-MoE (``qwen2_moe``): ``num_experts`` -> ``experts``,
``num_experts_per_tok`` -> ``top_k``, ``moe_intermediate_size`` -> ``expert_ffn_hidden``,
``shared_expert_intermediate_size`` -> ``shared_ffn_hidden``, ``intermediate_size`` ->
``ffn_hidden`` (the dense MLP of ``mlp_only_layers``: a prefix ``[0, .., k-1]`` ->
``dense_layers = k``; ``decoder_sparse_step`` must be 1); its shared expert's sigmoid gate
(``hidden`` weights a layer) is not modelled. DeepSeek-V2/V3 (``deepseek_v2``,
``deepseek_v3``) name their MoE as ``n_routed_experts`` -> ``experts``,
``num_experts_per_tok`` -> ``top_k``, ``moe_intermediate_size`` -> ``expert_ffn_hidden``,
``n_shared_experts x moe_intermediate_size`` -> ``shared_ffn_hidden``,
``first_k_dense_replace`` -> ``dense_layers``, ``intermediate_size`` -> ``ffn_hidden``; their
attention is multi-head latent attention (``kv_lora_rank``), which is not modelled, so these
configs are refused with that mapping (describe such a model with explicit fields).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from hwsim.workloads.transformer import TransformerSpec

__all__ = ["SUPPORTED_MODEL_TYPES", "spec_from_hf_config"]

_LLAMA_LIKE = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe")
SUPPORTED_MODEL_TYPES = _LLAMA_LIKE + ("gpt2", "gpt_neox", "bert", "opt", "falcon", "bloom")
_MLA_TYPES = ("deepseek_v2", "deepseek_v3")
"""Values of ``model_type`` that :func:`spec_from_hf_config` reads."""

# family defaults: (norm, position, bias, dropout, tied default)
_FAMILY = {"llama": ("rmsnorm", "rope", False, False, False),
           "gpt2": ("layernorm", "learned", True, True, True),
           "gpt_neox": ("layernorm", "rope", True, False, False),
           "bert": ("layernorm", "learned", True, True, True),
           "opt": ("layernorm", "learned", True, True, True),
           "falcon": ("layernorm", "rope", False, False, True),
           "bloom": ("layernorm", "alibi", True, True, True)}


def _act(name: str, gated: bool) -> str:
    base = "relu" if name == "relu" else "silu" if name in ("silu", "swish") else "gelu"
    if gated:
        return "swiglu" if base == "silu" else "geglu" if base == "gelu" else "relu"
    return base


def spec_from_hf_config(config: str | Path | Mapping[str, Any]) -> TransformerSpec:
    """Read a ``config.json`` (a path, or its parsed dict) into a :class:`TransformerSpec`.

    Raises
    ------
    ValueError
        Unreadable file, unsupported ``model_type`` (the message lists
        :data:`SUPPORTED_MODEL_TYPES`) or a missing required field.
    """
    where = "config"
    if isinstance(config, (str, Path)):
        where = str(config)
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: cannot read a Hugging Face config.json ({err})") from None
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: a config.json holds a JSON object, got {type(config).__name__}")
    c = dict(config)
    mt = c.get("model_type")
    if mt in _MLA_TYPES:
        raise ValueError(
            f"{where}: model_type {mt!r} uses multi-head latent attention (kv_lora_rank="
            f"{c.get('kv_lora_rank', 512)}), which is not modelled; describe the model with "
            f"explicit fields, its MoE keys mapping as experts = n_routed_experts "
            f"({c.get('n_routed_experts')}), top_k = num_experts_per_tok "
            f"({c.get('num_experts_per_tok')}), expert_ffn_hidden = moe_intermediate_size "
            f"({c.get('moe_intermediate_size')}), shared_ffn_hidden = n_shared_experts x "
            f"moe_intermediate_size, dense_layers = first_k_dense_replace "
            f"({c.get('first_k_dense_replace')}), ffn_hidden = intermediate_size "
            f"({c.get('intermediate_size')})")
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{where}: model_type {mt!r} is not supported; supported model types: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}")

    def get(*names: str, default: Any = KeyError) -> Any:
        for n in names:
            if c.get(n) is not None:
                return c[n]
        if default is KeyError:
            raise ValueError(f"{where}: model_type {mt!r} needs field {names[0]!r}")
        return default

    family = "llama" if mt in _LLAMA_LIKE else mt
    norm, position, bias, dropout, tied = _FAMILY[family]
    layers = get("num_hidden_layers", "n_layer")
    hidden = get("hidden_size", "n_embd", "n_embed")
    heads = get("num_attention_heads", "n_head")
    kv_heads = get("num_key_value_heads", default=heads)
    experts, top_k, encoder, type_vocab = 1, 1, False, 0
    moe: dict[str, int] = {}
    if mt == "gpt2":
        ffn = get("n_inner", default=4 * hidden)
        max_pos = get("n_positions", "max_position_embeddings", default=1024)
        act = get("activation_function", default="gelu_new")
    elif mt == "opt":
        ffn = get("ffn_dim")
        max_pos = get("max_position_embeddings", default=2048)
        act = get("activation_function", default="relu")
        bias = bool(get("enable_bias", default=True))
    elif mt == "falcon":
        if get("new_decoder_architecture", default=False):
            kv_heads = get("num_kv_heads", default=heads)
        else:
            kv_heads = 1 if get("multi_query", default=True) else heads
        ffn = get("ffn_hidden_size", default=4 * hidden)
        max_pos = get("max_position_embeddings", default=2048)
        act = get("activation", "hidden_act", default="gelu")
        bias = bool(get("bias", default=False))
        position = "alibi" if get("alibi", default=False) else "rope"
    elif mt == "bloom":  # no position table (ALiBi); trained at 2048 tokens
        ffn, max_pos, act = 4 * hidden, get("seq_length", default=2048), "gelu"
    else:
        ffn = get("intermediate_size")
        max_pos = get("max_position_embeddings")
        act = get("hidden_act", default="silu" if family == "llama" else "gelu")
    if mt == "mixtral":
        experts = get("num_local_experts", default=8)
        top_k = get("num_experts_per_tok", default=2)
    if mt == "qwen2_moe":
        experts, top_k = get("num_experts"), get("num_experts_per_tok")
        dense = sorted(get("mlp_only_layers", default=[]))
        if get("decoder_sparse_step", default=1) != 1 or dense != list(range(len(dense))):
            raise ValueError(f"{where}: qwen2_moe with decoder_sparse_step="
                             f"{get('decoder_sparse_step', default=1)} and mlp_only_layers="
                             f"{dense}: only MoE in every layer after a prefix of dense ones "
                             f"is modelled; valid: decoder_sparse_step 1, mlp_only_layers "
                             f"[0, .., k-1]")
        moe = {"expert_ffn_hidden": get("moe_intermediate_size"),
               "shared_ffn_hidden": get("shared_expert_intermediate_size", default=0),
               "dense_layers": len(dense)}
    if mt == "bert":
        encoder, type_vocab = True, get("type_vocab_size", default=2)
    name = str(c.get("_name_or_path") or mt).rstrip("/").split("/")[-1] or mt
    return TransformerSpec(
        layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, ffn_hidden=ffn,
        vocab=get("vocab_size"), activation=_act(str(act), family == "llama"), seq_len=max_pos,
        norm=norm, position=position, experts=experts, top_k=top_k,
        tied_embeddings=bool(get("tie_word_embeddings", default=tied)), encoder=encoder,
        bias=bias, dropout=dropout, max_positions=max_pos + (2 if mt == "opt" else 0),
        type_vocab=type_vocab, name=name, **moe)
