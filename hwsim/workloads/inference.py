"""LLM serving as ops: the weights and KV cache one device holds, and the forward ops of one
serving iteration (a mixed batch of prefill chunks and decoding sequences) on one device of a
tensor- and pipeline-parallel replica. Pure functions; the SimPy serving job runs them.

Layout and conventions
----------------------
Tensor parallelism is Megatron-LM's, as vLLM and TensorRT-LLM shard a decoder (see
:mod:`hwsim.workloads.transformer`): QKV and FFN-up (gate and up) column-parallel, the
out-projection and FFN-down row-parallel, each followed by a blocking all-reduce of the
``T x hidden`` activations (``T`` = all tokens of the iteration); the embedding and the LM head
are vocab-parallel (the lookup is all-reduced; the logits all-gathered before sampling). Norms,
row-parallel biases, the MoE router and learned position tables are replicated. A MoE layer holds
all its experts, each split by ``tp``, unless expert parallelism (``ep > 1``, optionally with
data-parallel attention) splits them (:mod:`hwsim.workloads.moe`: layout, all-to-all, load);
shared experts and the ``dense_layers`` FFNs are dense parts (split by ``tp``). Query heads
divide by ``tp`` (``tp`` must divide ``heads``); KV heads divide by ``tp`` too, and when
``tp > kv_heads`` each
rank keeps one KV head, replicated ``tp / kv_heads`` times (vLLM's rule; ``tp`` must then be a
multiple of ``kv_heads``): the K/V projection weights, their FLOPs and the KV cache are then
per-rank copies, so ``tp`` ranks together hold ``tp / kv_heads`` times the model's KV cache.

Pipeline parallelism: the layers are split as evenly as possible, the remainder going to the
middle stages first (:func:`stage_layers`, the split :func:`~hwsim.workloads.ops.pipeline_stages`
uses for training); the embedding lives on stage 0, the final norm and LM head on the last stage.
A tied LM head (``tied_embeddings``) shares the embedding matrix when ``pp = 1``; with ``pp > 1``
the last stage keeps its own copy (as Megatron-LM does). The stage-to-stage send of
``T x hidden`` activations is the job's, not an op here.

Bytes per value: weights (and GEMM inputs) at the precision's size (``fp8``/``int8`` serving
quantizes the weights to one byte; ``fp4`` to NVFP4's 0.5625, or MXFP4's 0.53125 with
``weight_precision="mxfp4"``, :mod:`hwsim.workloads.quant`); activations at 16 bits for 8-bit precisions, else at the
precision's size; the KV cache at ``kv_precision`` (default: the activations' size, vLLM's
``kv_cache_dtype="auto"``; ``kv_precision="fp8"`` is an 8-bit cache). Quantised formats (weights
narrower than the activations: fp8, int8, int4) apply to the decoder layers' linear weights only:
the embedding table and the LM head stay at the activations' size, and the LM head's GEMM runs at
the activations' precision, as the quantisers engines load leave them (NVIDIA ModelOpt's default
configs, which TensorRT-LLM's FP8 and INT4-AWQ checkpoints come from, disable the ``*lm_head*``
quantizer and quantize linear layers only; AWQ and GPTQ quantize the decoder layers' linears;
the training model's FP8 keeps them in 16 bits the same way, :mod:`hwsim.workloads.transformer`).
For Llama-3-8B (128,256-token vocabulary) that is 1.05 G of its 8.0 G parameters. Norm weights
and biases are counted at the weights' size (8-bit schemes keep them in 16 bits; well under 0.1%
of the weights).

FLOPs are 2 per multiply-add (DESIGN.md). Attention counts what the caller's (query, key) pairs
say: ``4 * pairs * head_dim`` per query head (score and value products; causality is in the
pairs the caller counts, e.g. ``c * cached + c (c + 1) / 2`` for a chunk of ``c`` tokens).

Bytes per op. A linear layer reads its input, its whole weight (once per iteration, whatever the
batch: what makes small-batch decode memory-bound) and writes its output. Prefill attention is
flash-attention style (compute-bound): it reads Q, the K/V of every key its chunks attend over
(``prefill_kv_tokens``, cached prefix plus chunk, each once), writes O, and moves the new tokens'
K/V into the cache (read at the activations' size, written at the cache's). Decode attention
reads the whole KV of every decoding sequence (``decode_pairs`` keys: memory-bound), Q and O, and
writes the new tokens' K/V. A MoE layer's experts read the weights of the experts its ``T``
tokens touch: with each token choosing ``top_k`` of ``E`` experts uniformly and independently,
``E (1 - (1 - top_k/E)^T)`` in expectation (all ``E`` for large ``T``, ``top_k`` for one token).
Norms read their input and weight and write their output; residual adds read two tensors and
write one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real

from hwsim.workloads.moe import MoELayout, expected_load, layer_kinds, moe_layout
from hwsim.workloads.ops import Op, _chunk_sizes, dtype_bytes
from hwsim.workloads.quant import DEFAULT_GROUP, dequant_flops, kv_bytes, weight_bytes, weight_only
from hwsim.workloads.transformer import _NORM_FLOPS, TransformerSpec

__all__ = ["ServingCost", "serving_cost", "iteration_ops", "inference_flops", "stage_layers",
           "experts_touched"]


@dataclass(frozen=True)
class ServingCost:
    """What one device of pipeline stage ``stage`` holds.

    ``weight_bytes``: the stage's weights on one tensor-parallel rank (its layers, sharded as the
    module docstring says; the embedding on stage 0, final norm and LM head on the last stage;
    all experts, each ``/tp``, or with expert parallelism ``experts / ep`` of them, each
    ``/etp``: :mod:`hwsim.workloads.moe`). ``kv_bytes_per_token``: the K and V bytes one token adds to this
    device's cache, ``2 * layers * kv_heads_per_rank * head_dim * kv_value_bytes`` with
    ``kv_heads_per_rank = kv_heads / tp``, or 1 when ``tp > kv_heads`` (replicated).
    ``layers``: the stage's layers."""

    weight_bytes: float
    kv_bytes_per_token: float
    layers: int


def _int(name: str, v: object, low: int = 0) -> int:
    if not isinstance(v, Integral) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name}={v!r} must be an integer >= {low}")
    return int(v)


def _real(name: str, v: object) -> float:
    if not isinstance(v, Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name}={v!r} must be a finite number >= 0")
    return float(v)


def _check_spec(spec: object) -> TransformerSpec:
    if not isinstance(spec, TransformerSpec):
        raise ValueError(f"serving needs a TransformerSpec (a decoder LLM), got "
                         f"{type(spec).__name__}")
    if spec.encoder:
        raise ValueError(f"model {spec.name!r} is an encoder (BERT-style, encoder=True); "
                         f"serving models generate tokens: use a decoder spec")
    return spec


def stage_layers(layers: int, pp: int) -> list[int]:
    """Layers of each of ``pp`` pipeline stages: an even split, the remainder to the middle
    stages first (the first and last also hold the embedding and the LM head), as training's
    :func:`~hwsim.workloads.ops.pipeline_stages`. ValueError if ``pp`` exceeds ``layers``."""
    layers, pp = _int("layers", layers, 1), _int("pp", pp, 1)
    if pp > layers:
        raise ValueError(f"pp={pp} exceeds the model's {layers} layers; valid: 1 <= pp <= "
                         f"{layers}")
    return _chunk_sizes(layers, pp)


def _layout(spec: TransformerSpec, tp: int, pp: int, stage: int) -> tuple[int, int]:
    """Validated (KV heads per rank, layers of the stage)."""
    tp, pp, stage = _int("tp", tp, 1), _int("pp", pp, 1), _int("stage", stage)
    if spec.heads % tp:
        raise ValueError(f"tp={tp} must divide heads={spec.heads} (model {spec.name!r})")
    kv = spec.kv_heads
    if kv % tp and tp % kv:
        raise ValueError(f"tp={tp} and kv_heads={kv} (model {spec.name!r}): tp must divide "
                         f"kv_heads, or be a multiple of it (each rank then keeps one "
                         f"replicated KV head)")
    sizes = stage_layers(spec.layers, pp)
    if stage >= pp:
        raise ValueError(f"stage={stage} out of range; valid: 0 .. {pp - 1} (pp={pp})")
    return max(kv // tp, 1), sizes[stage]


def _bytes(precision: str, kv_precision: str | None, weight_precision: str | None = None,
           group: int = DEFAULT_GROUP) -> tuple[float, int, float, float]:
    """(weight, activation, KV cache, GEMM input) bytes per value (module docstring;
    :mod:`hwsim.workloads.quant`)."""
    mb = dtype_bytes(precision)
    if precision == "fp4":  # block-scaled: the scales ride with the values (quant docstring)
        mb = weight_bytes("fp4" if weight_precision is None else weight_precision, group)
    vb = 2 if mb < 2 else mb
    kb = vb if kv_precision is None else kv_bytes(kv_precision)
    wb = mb if weight_precision is None else weight_bytes(weight_precision, group)
    return wb, vb, kb, mb


def _weights(spec: TransformerSpec, tp: int, kv_dev: int,
             lay: MoELayout | None = None) -> dict[str, float]:
    """Weight elements on one rank, by part (module docstring's sharding): ``ffn_up`` and
    ``ffn_down`` are one routed expert's slice (the FFN of a dense model), ``shared_*`` the
    shared experts', ``dense_*`` a dense layer's FFN; ``layer`` a MoE (or dense model's) layer,
    ``dense_layer`` one of the ``dense_layers``."""
    h, f, d, V, E, t = spec.hidden, spec.ffn_hidden, spec.head_dim, spec.vocab, spec.experts, tp
    lay = lay or MoELayout(tp)
    fe, et = spec.expert_ffn_hidden, lay.etp
    b = 1 if spec.bias else 0
    gate = 2 if spec.gated else 1
    norm = (2 if spec.norm == "layernorm" else 1) * h
    qkv_out = h / t + 2 * kv_dev * d
    w = {"norm": float(norm),
         "qkv": h * qkv_out + b * qkv_out,
         "out_proj": h / t * h + b * h,
         "ffn_up": h * gate * fe / et + b * gate * fe / et,     # one expert's, for MoE
         "ffn_down": fe / et * h + b * h,
         "router": float(h * E) if E > 1 else 0.0}
    for part, width in (("shared", spec.shared_ffn_hidden), ("dense", f)):
        w[f"{part}_up"] = (h + b) * gate * width / t if width else 0.0
        w[f"{part}_down"] = width / t * h + b * h if width else 0.0
    attn = 2 * w["norm"] + w["qkv"] + w["out_proj"]
    w["layer"] = (attn + w["router"] + E // lay.ep * (w["ffn_up"] + w["ffn_down"])
                  + w["shared_up"] + w["shared_down"])
    w["dense_layer"] = attn + w["dense_up"] + w["dense_down"]
    tables = (spec.max_positions * h if spec.position == "learned" else 0) + spec.type_vocab * h
    w["embedding"] = V * h / t + tables
    w["logits"] = V * h / t
    return w


def serving_cost(spec: TransformerSpec, *, tp: int = 1, pp: int = 1, stage: int = 0,
                 precision: str = "bf16", kv_precision: str | None = None,
                 weight_precision: str | None = None,
                 weight_group: int = DEFAULT_GROUP, ep: int = 1,
                 attention_dp: bool = False) -> ServingCost:
    """Weights and KV-cache bytes per token on one device of pipeline stage *stage* of a
    ``tp x pp`` replica (``tp x ep x pp`` with *attention_dp*; module docstring: sharding,
    bytes per value; :mod:`hwsim.workloads.moe`: expert parallelism).

    Summed over the ``tp * pp`` devices the weights are the model's ``spec.params()`` plus the
    replicas of what tensor parallelism replicates (norms, row-parallel biases, router, learned
    position tables: ``tp - 1`` extra copies) plus, for a tied LM head with ``pp > 1``, the last
    stage's copy of the embedding matrix. With *attention_dp* each of the ``ep`` attention
    groups holds that much of everything but the routed experts, which are held once; the KV
    bytes per token are those of the group that holds the sequence."""
    spec = _check_spec(spec)
    kv_dev, layers = _layout(spec, tp, pp, stage)
    lay = moe_layout(spec, tp, ep, attention_dp)
    mb, vb, kb, _ = _bytes(precision, kv_precision, weight_precision, weight_group)
    w = _weights(spec, tp, kv_dev, lay)
    dense, moe_layers = layer_kinds(spec.dense_layers, stage_layers(spec.layers, pp), stage)
    elems = moe_layers * w["layer"] + dense * w["dense_layer"]
    table = 0.0  # embedding and LM head: at the activations' size (module docstring)
    if stage == 0:
        table += w["embedding"]
    if stage == pp - 1:
        elems += w["norm"]
        table += 0.0 if spec.tied_embeddings and pp == 1 else w["logits"]
    return ServingCost(weight_bytes=mb * elems + max(mb, vb) * table,
                       kv_bytes_per_token=2.0 * layers * kv_dev * spec.head_dim * kb,
                       layers=layers)


def experts_touched(experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts *tokens* tokens route to, each choosing *top_k* of *experts*
    uniformly and independently: ``E (1 - (1 - k/E)^T)``; ``experts`` itself for a dense FFN
    (``experts = 1``) with any token."""
    if tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def iteration_ops(spec: TransformerSpec, *, tp: int = 1, pp: int = 1, stage: int = 0,
                  precision: str = "bf16", prefill_tokens: int = 0, prefill_pairs: float = 0.0,
                  decode_seqs: int = 0, decode_pairs: float = 0.0, logit_tokens: int = 0,
                  prefill_kv_tokens: int | None = None,
                  kv_precision: str | None = None, weight_precision: str | None = None,
                  weight_group: int = DEFAULT_GROUP, prefill_seqs: int | None = None,
                  tile_m: int = 128, kv_per_query_head: bool = False, ep: int = 1,
                  attention_dp: bool = False, expert_tokens: float | None = None,
                  expert_active: float | None = None) -> list[tuple[Op, int]]:
    """Forward ops of one serving iteration on one device of pipeline stage *stage*.

    Parameters
    ----------
    spec : TransformerSpec
        A decoder (``encoder=False``).
    tp, pp, stage : int
        Tensor-parallel degree (divides ``heads``; divides or is a multiple of ``kv_heads``),
        pipeline stages (at most ``layers``; layers split by :func:`stage_layers`), this stage.
    precision, kv_precision, weight_precision : str
        GEMM precision; KV-cache precision (default: the activations', module docstring);
        weight storage (default: the GEMMs'; :mod:`hwsim.workloads.quant`), with
        *weight_group* elements per scale for ``int4``.
    prefill_seqs : int, optional
        Sequences the prefill chunks belong to (the attention kernel's batch); default 1.
    tile_m : int
        Rows of a GEMM output tile (the device's kernel model), for the dequantisation work of
        weight-only formats.
    kv_per_query_head : bool
        The decode attention kernel reads each sequence's K/V once per query head rather than
        once per KV head (a generation kernel without grouped-query sharing: ``heads /
        kv_heads`` times the KV bytes of a GQA model).
    prefill_tokens : int
        New prompt tokens of all prefill chunks together.
    prefill_pairs : float
        (query, key) pairs those chunks attend over (causal), at least ``prefill_tokens``.
    decode_seqs : int
        Sequences decoding one token each.
    decode_pairs : float
        Sum of the decoding sequences' KV lengths (each new token attends to that many keys), at
        least ``decode_seqs``.
    logit_tokens : int
        Tokens whose logits the last stage computes and samples (a prefill chunk that ends its
        prompt gives 1, each decoding sequence 1); at most ``prefill_tokens + decode_seqs``;
        ignored on other stages.
    prefill_kv_tokens : int, optional
        Distinct keys the prefill chunks read, each sequence's cached prefix plus its chunk;
        default ``prefill_tokens`` (no cached prefix).
    ep, attention_dp : int, bool
        Expert parallelism (:mod:`hwsim.workloads.moe`). With *attention_dp* the token counts
        above are this rank's attention group's, and the iteration's tokens over all groups
        are ``ep`` times them unless *expert_tokens* says otherwise.
    expert_tokens, expert_active : float, optional
        Routed token copies this rank's experts run in each MoE layer, and how many of its
        experts they touch (the busiest rank's, drawn by the job); default the uniform
        expectation :func:`~hwsim.workloads.moe.expected_load` (at ``ep = 1``: every copy, and
        ``E (1 - (1 - k/E)^T)`` experts).

    Returns
    -------
    list of (Op, int)
        ``(op, n)`` in execution order: on stage 0 the embedding lookup (``n = 1``; with
        ``tp > 1`` its all-reduce), then the ops of one layer each with ``n`` = the stage's
        layers (every layer is identical: running the layer's ops as a block ``n`` times is the
        real order), then on the last stage, when ``logit_tokens > 0``, the final norm, the LM
        head (``tp > 1``: the logits' all-gather) and sampling (``n = 1``). With ``tp > 1`` each
        layer has two blocking ``tp_allreduce`` ops of ``T * hidden * activation bytes``
        (``T = prefill_tokens + decode_seqs``), after the out-projection and after the FFN.
        With *attention_dp* each MoE layer has an ``ep_alltoall`` dispatch before its experts
        and combine after them, of ``max(T k, expert_tokens) x hidden x activation bytes``
        (the all-to-all's buffer; :func:`~hwsim.workloads.moe.alltoall_bytes` leave the rank).
        The model's ``dense_layers`` on this stage come first, as their own block of ops.
        An empty iteration (``T = 0``) is ``[]``.
    """
    spec = _check_spec(spec)
    kv_dev, layers = _layout(spec, tp, pp, stage)
    lay = moe_layout(spec, tp, ep, attention_dp)
    wb, vb, kb, gb = _bytes(precision, kv_precision, weight_precision, weight_group)
    deq = weight_precision is not None and weight_only(weight_precision, precision)
    act_dtype = precision if dtype_bytes(precision) >= 2 else "fp16"
    P = _int("prefill_tokens", prefill_tokens)
    D = _int("decode_seqs", decode_seqs)
    L = _int("logit_tokens", logit_tokens)
    Pp = _real("prefill_pairs", prefill_pairs)
    Dp = _real("decode_pairs", decode_pairs)
    Pk = P if prefill_kv_tokens is None else _int("prefill_kv_tokens", prefill_kv_tokens)
    T = P + D
    for name, pairs, tokens, what in (("prefill_pairs", Pp, P, "prefill_tokens"),
                                      ("decode_pairs", Dp, D, "decode_seqs")):
        if pairs < tokens or (tokens == 0 and pairs > 0):
            raise ValueError(f"{name}={pairs!r} with {what}={tokens}: every token attends at "
                             f"least to itself, so need {name} >= {what}, and {name} = 0 "
                             f"when {what} = 0")
    if Pk < P:
        raise ValueError(f"prefill_kv_tokens={Pk} must be >= prefill_tokens={P} (the chunks' "
                         f"own keys plus any cached prefix)")
    if L > T:
        raise ValueError(f"logit_tokens={L} exceeds the iteration's {T} tokens "
                         f"(prefill_tokens + decode_seqs)")
    if T == 0:
        return []

    h, a, d, f, V, E, k = (spec.hidden, spec.heads, spec.head_dim, spec.ffn_hidden, spec.vocab,
                           spec.experts, spec.top_k)
    t, moe = tp, spec.experts > 1
    gate = 2 if spec.gated else 1
    nflop = _NORM_FLOPS[spec.norm]
    qd, kvd = a // t * d, kv_dev * d          # query and K (or V) width on this rank
    w = _weights(spec, t, kv_dev, lay)
    act = T * h * vb                          # one hidden-state tensor: the TP message

    def linear(name: str, m: float, kk: float, n: float, weights: float,
               batch: float = 1.0, head: bool = False) -> Op:
        """A GEMM ``[m, kk] x [kk, n]`` reading *weights* elements; *batch* experts' GEMMs of
        ``m / batch`` rows each when MoE (the expected experts touched, rounded up); *head*:
        the LM head, unquantised (module docstring)."""
        batch = max(1.0, math.ceil(batch - 1e-9))
        shape = ("gemm", max(m / batch, 1.0), n, kk, batch)
        ib, kb_w, dt = (max(gb, vb), max(wb, vb), act_dtype) if head else (gb, wb, precision)
        return Op(name, 2.0 * m * kk * n, ib * m * kk + kb_w * weights + vb * m * n,
                  matmul=True, shape=shape, dtype=dt)

    def dequant(name: str, m: float, weights: float, kk: float) -> list[Op]:
        if not deq or m <= 0:
            return []
        n = weights / kk
        return [Op(f"{name}.dequant", dequant_flops(m, kk, n, tile_m), 0.0, dtype="fp32",
                   fused=True)]

    def elementwise(name: str, elems: float, flops_per: float, touches: float,
                    weights: float = 0.0) -> Op:
        return Op(name, elems * flops_per, vb * elems * touches + wb * weights, dtype=act_dtype)

    def allreduce(name: str) -> Op:
        return Op(f"{name}.tp_allreduce", 0.0, 0.0, comm="tp_allreduce", comm_bytes=act)

    out: list[tuple[Op, int]] = []
    if stage == 0:
        # vocab-parallel lookup: the rows of this rank's vocabulary shard (T/tp tokens in
        # expectation) and of the replicated position / segment tables read, the output written
        tables = (spec.position == "learned") + (spec.type_vocab > 0)
        out.append((Op("embedding.lookup", float(T * h * tables),
                       max(wb, vb) * T * h * (1 / t + tables) + vb * T * h), 1))
        if t > 1:
            out.append((allreduce("embedding.lookup"), 1))

    ops: list[Op] = [elementwise("layer.norm1", T * h, nflop, 2.0, w["norm"]),
                     linear("layer.qkv", T, h, qd + 2 * kvd, w["qkv"]),
                     *dequant("layer.qkv", T, w["qkv"], h)]
    if spec.position == "rope":
        ops.append(elementwise("layer.rope", T * (qd + kvd), 3.0, 2.0))
    new_kv = (vb + kb) * 2 * kvd              # moving one new token's K/V into the cache
    if P:  # one fused flash kernel over the chunks' heads (shape: the mean chunk)
        n = max(1, prefill_seqs or 1)
        ops.append(Op("layer.attention.prefill", 4.0 * Pp * qd,
                      2 * vb * P * qd + kb * Pk * 2 * kvd + new_kv * P, matmul=True,
                      shape=("attention", n * (a // t), P / n, Pk / n, d), dtype=act_dtype))
    if D:
        read = qd if kv_per_query_head else kvd  # K/V width read per key
        ops.append(Op("layer.attention.decode", 4.0 * Dp * qd,
                      2 * vb * D * qd + kb * Dp * 2 * read + new_kv * D, matmul=True,
                      dtype=act_dtype))
    ops += [linear("layer.out_proj", T, h / t, h, w["out_proj"]),
            *dequant("layer.out_proj", T, w["out_proj"], h / t)]
    if t > 1:
        ops.append(allreduce("layer.out_proj"))
    ops += [elementwise("layer.residual1", T * h, 1.0, 3.0),
            elementwise("layer.norm2", T * h, nflop, 2.0, w["norm"])]

    def mlp(name: str, m: float, width: int, split: int, up: float, down: float,
            touched: float = 1.0) -> list[Op]:
        """An FFN of *width* columns split over *split* ranks, over *m* rows (*touched*
        experts' GEMMs)."""
        return [linear(f"{name}_up", m, h, gate * width / split, up, touched),
                *dequant(f"{name}_up", m, up, h),
                elementwise(f"layer.{spec.activation}" if name == "layer.ffn" else
                            f"{name}.{spec.activation}", m * width / split, 8.0, gate + 1.0),
                linear(f"{name}_down", m, width / split, h, down, touched),
                *dequant(f"{name}_down", m, down, width / split)]

    def tail(ffn: list[Op]) -> list[Op]:
        return ffn + ([allreduce("layer.ffn")] if t > 1 else []) + [
            elementwise("layer.residual2", T * h, 1.0, 3.0)]
    dense_n, moe_n = layer_kinds(spec.dense_layers, stage_layers(spec.layers, pp), stage)
    if dense_n:  # DeepSeek-style first layers: a dense FFN of ffn_hidden
        out += [(op, dense_n) for op in ops + tail(
            mlp("layer.dense_ffn", T, f, t, w["dense_up"], w["dense_down"]))]
    if moe:
        T_all = T * lay.dp
        mt, touched = expected_load(E, k, lay.ep, T_all)  # routed copies through the experts
        mt = mt if expert_tokens is None else _real("expert_tokens", expert_tokens)
        touched = touched if expert_active is None else _real("expert_active", expert_active)
        ffn = [linear("layer.router", T, h, E, w["router"]),
               elementwise("layer.router.topk", T * E, 4.0, 2.0)]
        a2a = Op("layer.moe.dispatch.ep_alltoall", 0.0, 0.0, comm="ep_alltoall",
                 comm_bytes=max(T * k, mt) * h * vb)
        ffn += [a2a] if lay.attention_dp else []
        ffn += mlp("layer.ffn", mt, spec.expert_ffn_hidden, lay.etp, touched * w["ffn_up"],
                   touched * w["ffn_down"], touched)
        ffn += [replace(a2a, name="layer.moe.combine.ep_alltoall")] if lay.attention_dp else []
        if spec.shared_ffn_hidden:  # every token through the shared experts
            ffn += mlp("layer.shared_ffn", T, spec.shared_ffn_hidden, t, w["shared_up"],
                       w["shared_down"])
        # weighted sum of each token's top_k expert outputs
        ffn.append(elementwise("layer.moe.combine", T * h * k, 2.0, 1.0 + 1.0 / k))
    else:
        ffn = mlp("layer.ffn", T, f, t, w["ffn_up"], w["ffn_down"])
    out += [(op, moe_n) for op in ops + tail(ffn)]

    if stage == pp - 1 and L:  # final norm, vocab-parallel logits, gather, sampling
        out.append((elementwise("head.norm", L * h, nflop, 2.0, w["norm"]), 1))
        out.append((linear("head.logits", L, h, V / t, w["logits"], head=True), 1))
        if t > 1:
            out.append((Op("head.logits.tp_allgather", 0.0, 0.0, comm="tp_allgather",
                           comm_bytes=L * V * vb), 1))
        # softmax / argmax over the vocabulary in fp32: read the logits, write probabilities
        out.append((Op("head.sample", 5.0 * L * V, (vb + 4.0) * L * V), 1))
    return out


def inference_flops(spec: TransformerSpec, *, tokens: int, pairs: float,
                    logit_tokens: int | None = None) -> float:
    """Forward matmul FLOPs (2 per multiply-add) of the whole model (all stages, all
    tensor-parallel ranks, counted once) for *tokens* tokens attending over *pairs* (query, key)
    pairs:

    ``2 * tokens * N + 4 * pairs * hidden * layers + 2 * logit_tokens * hidden * vocab``

    with ``N`` the matrix parameters of the layers a token runs through (per layer: Q and O
    ``h^2`` each, K and V ``h * kv_heads * head_dim`` each, ``top_k`` experts' FFN matrices,
    the shared experts', the MoE router ``h * E``; a dense FFN in the ``dense_layers``; no
    biases, norms or embedding lookup) and *logit_tokens* the
    tokens put through the LM head (default *tokens*: the usual ``2 N_total`` per token).
    Replicated K/V projections (``tp > kv_heads``) are counted once: these are model FLOPs."""
    spec = _check_spec(spec)
    tokens = _int("tokens", tokens)
    pairs = _real("pairs", pairs)
    L = tokens if logit_tokens is None else _int("logit_tokens", logit_tokens)
    h, f, kvd = spec.hidden, spec.ffn_hidden, spec.kv_heads * spec.head_dim
    nmat = 3 if spec.gated else 2
    per_layer = 2 * h * h + 2 * h * kvd + spec.top_k * nmat * h * spec.expert_ffn_hidden
    per_layer += h * spec.experts + nmat * h * spec.shared_ffn_hidden if spec.experts > 1 else 0
    dense = (2 * h * h + 2 * h * kvd + nmat * h * f) * spec.dense_layers
    return (2.0 * tokens * per_layer * (spec.layers - spec.dense_layers) + 2.0 * tokens * dense
            + 4.0 * pairs * h * spec.layers + 2.0 * L * h * spec.vocab)
