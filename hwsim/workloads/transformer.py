"""Transformers as layer-level ops: GPT-3 style (GELU FFN, learned positions), Llama style
(SwiGLU, grouped-query attention, RMSNorm, RoPE), BERT-style encoders and mixture-of-experts
decoders (Mixtral-like top-k routing), per micro-batch on one tensor-parallel rank.

Parallel layout: Megatron-LM (Shoeybi et al. 2019 Sec 3; Korthikanti et al. 2022 Sec 4.2.2 for
sequence parallelism): QKV and FFN-up are column-parallel, the out-projection and FFN-down
row-parallel, embedding and output layer vocab-parallel, so their FLOPs and bytes divide by
``tp``; norms, residuals and dropout are replicated, or split by ``tp`` under sequence
parallelism. Context parallelism splits the sequence: each rank has ``s/cp`` queries against all
``s`` keys, whose K/V it all-gathers (overlapped with attention). MoE: routed tokens are
exchanged by all-to-all within the expert-parallel group (Megatron-Core ``alltoall`` dispatcher;
expert FFNs split by ``tp`` too; Megatron-Core requires sequence parallelism with MoE and TP, so
router work divides by ``tp``).

FLOPs (2 per multiply-add). Forward matmuls of one layer, T = b*s tokens, a*d = h:
QKV ``2Th(h + 2*kv*d)``, scores and values ``4Tsh`` (in full, not halved for causality;
flash-attention style: bytes are Q, K, V, O only), out-projection ``2Th^2``, FFN ``2Thf`` per
matrix (2 matrices, 3 when gated), MoE ``top_k`` experts per token plus the router ``2ThE``;
output layer ``2ThV``. Backward = 2x forward (dgrad + wgrad; attention backward 2x). For GPT
(kv = a, f = 4h) ``model_flops`` is Megatron's ``72Bslh^2 (1 + s/(6h) + V/(12lh))`` (Narayanan
et al. 2021 Appendix). ``hardware_flops`` adds the recomputed forward matmuls: full recompute
re-runs every layer's forward once (not the output layer, which Megatron does not checkpoint),
giving exactly ``96Bslh^2 (1 + s/(6h) + V/(16lh))``; selective recompute re-runs scores and
values, ``4Tsh`` per layer. Flash-attention's recompute of QK^T in its backward is not counted.

Attention bytes. With ``flash_attention`` one fused kernel reads Q, K, V and writes O (backward:
reads Q, K, V, O, dO, writes dQ, dK, dV). Without it (Megatron-LM before 2022) the score
matrices (``S = b*a*s^2/t`` values) pass through memory: the batched GEMMs write the scores,
read the probabilities (forward), write dP, read P for dV and dS twice for dQ and dK (backward),
and a separate memory-bound op runs the fused scale-mask-softmax (read scores, write
probabilities; backward reads P and dP, writes dS) and, with dropout, the attention dropout
(read, write, a 1-byte mask; the same in backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hwsim.workloads.memory import RECOMPUTE_POLICIES, layer_activation_bytes, storage_bytes
from hwsim.workloads.ops import optimizer_op_bytes
from hwsim.workloads.ops import (Block, ModelOps, Op, OpBuilder, dtype_bytes, model_from_blocks,
                                 recomputed)

__all__ = ["TransformerSpec", "transformer_ops", "ACTIVATIONS", "NORMS", "POSITIONS"]

ACTIVATIONS = {"gelu": False, "relu": False, "silu": False, "swiglu": True, "geglu": True}
"""FFN activations; True = gated (three matrices: gate, up, down)."""
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "alibi", "none")
_NORM_FLOPS = {"layernorm": 5.0, "rmsnorm": 4.0}  # per element, memory-bound either way


@dataclass(frozen=True)
class TransformerSpec:
    """A transformer's architecture. ``kv_heads`` defaults to ``heads`` (multi-head attention),
    ``ffn_hidden`` to ``4*hidden``, ``max_positions`` to ``seq_len``. ``experts`` > 1 makes
    every layer's FFN a mixture of experts with ``top_k`` routing; DeepSeek-style MoE layers
    (serving only: :func:`transformer_ops` refuses them) set ``expert_ffn_hidden`` (each routed
    expert's FFN width, default ``ffn_hidden``), ``shared_ffn_hidden`` (the shared experts'
    FFN width together, every token through it; 0 = none) and ``dense_layers`` (the first
    layers keep a dense FFN of ``ffn_hidden``). ``encoder`` adds BERT's
    segment embeddings (``type_vocab``), pooler and masked-LM transform; attention FLOPs are the
    same either way. ``bias``: linear layers have biases (GPT, BERT; not Llama).
    ``dropout``: dropout masks are kept (GPT, BERT; Llama trains without dropout)."""

    layers: int
    hidden: int
    heads: int
    vocab: int
    kv_heads: int | None = None
    ffn_hidden: int | None = None
    activation: str = "gelu"
    seq_len: int = 2048
    norm: str = "layernorm"
    position: str = "learned"
    experts: int = 1
    top_k: int = 1
    tied_embeddings: bool = False
    encoder: bool = False
    bias: bool = True
    dropout: bool = True
    max_positions: int | None = None
    type_vocab: int = 0
    name: str = "transformer"
    expert_ffn_hidden: int | None = None
    shared_ffn_hidden: int = 0
    dense_layers: int = 0

    def __post_init__(self) -> None:
        for key, default in (("kv_heads", self.heads), ("ffn_hidden", 4 * self.hidden),
                             ("max_positions", self.seq_len)):
            if getattr(self, key) is None:
                object.__setattr__(self, key, default)
        if self.expert_ffn_hidden is None:
            object.__setattr__(self, "expert_ffn_hidden", self.ffn_hidden)
        for key in ("layers", "hidden", "heads", "vocab", "kv_heads", "ffn_hidden", "seq_len",
                    "experts", "top_k", "expert_ffn_hidden"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key}={v!r} must be a positive integer")
        for key, valid in (("activation", ACTIVATIONS), ("norm", NORMS), ("position", POSITIONS)):
            if getattr(self, key) not in valid:
                raise ValueError(f"{key}={getattr(self, key)!r}; valid: {', '.join(valid)}")
        for ok, msg in ((self.hidden % self.heads == 0, "hidden is not a multiple of heads"),
                        (self.heads % self.kv_heads == 0, "heads is not a multiple of kv_heads"),
                        (self.top_k <= self.experts, "top_k exceeds experts")):
            if not ok:
                raise ValueError(f"{msg} (hidden={self.hidden}, heads={self.heads}, kv_heads="
                                 f"{self.kv_heads}, experts={self.experts}, top_k={self.top_k})")
        for key in ("shared_ffn_hidden", "dense_layers"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{key}={v!r} must be an integer >= 0")
        if self.experts == 1 and (self.shared_ffn_hidden or self.dense_layers
                                  or self.expert_ffn_hidden != self.ffn_hidden):
            raise ValueError(f"expert_ffn_hidden, shared_ffn_hidden and dense_layers describe "
                             f"mixture-of-experts layers; model {self.name!r} has experts=1")
        if self.dense_layers > self.layers:
            raise ValueError(f"dense_layers={self.dense_layers} exceeds layers={self.layers}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def gated(self) -> bool:
        return ACTIVATIONS[self.activation]

    def param_counts(self) -> dict[str, float]:
        """Parameters by part: ``embedding`` (tokens, positions, segments), ``attention`` and
        ``ffn`` per layer (``ffn`` = all experts, the shared experts and the router of a MoE
        layer), ``ffn_active`` (``top_k`` experts, the shared experts and the router),
        ``ffn_dense`` (the FFN of one of the ``dense_layers``; 0 without them), ``norms`` per
        layer, ``head`` (final norm, output matrix unless tied, BERT's pooler and MLM
        transform), ``total`` and ``active`` (per token)."""
        h, f, kvd, bias = self.hidden, self.ffn_hidden, self.kv_heads * self.head_dim, self.bias
        nmat = 3 if self.gated else 2
        norm = (2 if self.norm == "layernorm" else 1) * h

        def mlp(width: int) -> float:
            return nmat * h * width + ((nmat - 1) * width + h if bias else 0)
        attn = 2 * h * h + 2 * h * kvd + (2 * h + 2 * kvd if bias else 0)
        expert = mlp(self.expert_ffn_hidden)
        router = h * self.experts if self.experts > 1 else 0
        router += mlp(self.shared_ffn_hidden) if self.shared_ffn_hidden else 0
        dense = mlp(f) if self.dense_layers else 0
        moe_layers = self.layers - self.dense_layers
        emb = self.vocab * h + (self.max_positions * h if self.position == "learned" else 0)
        emb += self.type_vocab * h + (norm if self.encoder else 0)  # BERT's embedding LayerNorm
        head = norm + (0 if self.tied_embeddings else self.vocab * h)
        if self.encoder:  # pooler (h^2 + h), MLM transform (h^2 + h + norm), decoder bias V
            head += 2 * (h * h + h) + norm + self.vocab
        per_layer = attn + self.experts * expert + router + 2 * norm
        active = attn + self.top_k * expert + router + 2 * norm
        dense_layer = self.dense_layers * (attn + dense + 2 * norm)
        return {"embedding": emb, "attention": attn, "ffn": self.experts * expert + router,
                "ffn_active": self.top_k * expert + router, "ffn_dense": float(dense),
                "norms": 2 * norm, "head": head,
                "total": emb + moe_layers * per_layer + dense_layer + head,
                "active": emb + moe_layers * active + dense_layer + head}

    def params(self) -> float:
        """Total parameters (all experts)."""
        return self.param_counts()["total"]


def _rank_params(spec: TransformerSpec, t: int, ep: int) -> tuple[float, float]:
    """(all, expert) parameters of one layer on one rank: matrices and column-parallel biases
    divide by ``t``; norms, row-parallel biases and the router are replicated (Megatron-LM);
    ``experts / ep`` experts per rank."""
    h, f, kvd, b = spec.hidden, spec.ffn_hidden, spec.kv_heads * spec.head_dim, spec.bias
    nmat = 3 if spec.gated else 2
    norms = 2 * (2 if spec.norm == "layernorm" else 1) * h
    attn = (2 * h * h + 2 * h * kvd + (h + 2 * kvd if b else 0)) / t + (h if b else 0)
    expert = (nmat * h * f + ((nmat - 1) * f if b else 0)) / t + (h if b else 0)
    experts = spec.experts // ep * expert
    router = h * spec.experts if spec.experts > 1 else 0
    return attn + norms + experts + router, (experts if spec.experts > 1 else 0.0)


def transformer_ops(spec: TransformerSpec, *, micro_batch: int, seq_len: int | None = None,
                    precision: str = "bf16", tp: int = 1, sp: bool = False, cp: int = 1,
                    ep: int = 1, recompute: str = "none", flash_attention: bool = True,
                    optimizer: str = "adam", fp8_recipe: Any = None,
                    tp_overlap: bool = False, fp4_recipe: Any = None,
                    fp8_transpose: bool = True) -> ModelOps:
    """Layer-level ops of one micro-batch on one tensor-parallel rank.

    Parameters
    ----------
    spec : TransformerSpec
    micro_batch, seq_len : int
        Sequences per micro-batch (B in the FLOP formulas); tokens per sequence (``spec.seq_len``).
    precision : str
        GEMM input precision; stored values use :func:`~hwsim.workloads.memory.storage_bytes`.
    tp, sp, cp, ep : int, bool, int, int
        Tensor parallel degree, sequence parallelism (ignored when ``tp = 1``), context
        parallel degree, expert parallel degree (experts per rank = ``experts / ep``).
    recompute : {"none", "selective", "full"}
        Activation recompute: sets the kept activations and inserts the recomputed forward ops
        (``Op.recompute``) into the backward.
    flash_attention : bool
        Attention never stores the s x s scores (activations and op bytes); default True.
    optimizer : str
        One fused update op per block (multi-tensor Adam, as Megatron-LM and Apex run it).
    tp_overlap : bool
        The software stack pipelines TP collectives with their GEMMs (Megatron-Core
        ``--tp-comm-overlap``; needs ``sp``): :meth:`~hwsim.workloads.ops.OpBuilder.linear`.
    fp8_recipe : object, optional
        With ``precision="fp8"``, the software stack's FP8 recipe
        (:class:`~hwsim.catalog.stacks.Fp8Recipe`: ``attention``, ``weight_copy_bytes``,
        ``amax_history``); see "FP8" below. Without one, fp8 means every GEMM and attention at
        the FP8 peak with 1-byte operands (an upper bound no stack reaches).
    fp8_transpose : bool
        The device's FP8 GEMMs are TN only (Hopper, Ada: default), so every FP8 tensor is cast
        with its transpose and FP8 weights keep both copies; False (Blackwell, devices.yaml
        ``fp8_any_layout``): no transposes, half of the recipe's ``weight_copy_bytes``.
    fp4_recipe : object, optional
        With ``precision="fp4"``, the stack's NVFP4 recipe (:class:`~hwsim.catalog.fp4.Fp4Recipe`);
        see "NVFP4" below. Without one, fp4 means every GEMM at the FP4 peak (an upper bound).

    FP8 (a recipe given; Transformer Engine's delayed scaling as Megatron-Core and NeMo run it):
    the linear layers' GEMMs (QKV, out-projection, FFN up/gate and down) run in FP8
    (``Op.dtype="fp8"``); attention runs in bf16 unless the recipe's ``attention`` (TE's
    ``fp8_dpa``) is set; the embedding, the MoE router, the output layer (LM head) and BERT's
    pooler/MLM transform are not TE modules and stay bf16; every other op is bf16. Each FP8
    linear adds its cast kernels (:meth:`OpBuilder.linear`: QKV and FFN-up inputs come from
    TE's fused LayerNormLinear/LayerNormMLP and FFN-down's from its fused activation, so only
    their transposes are extra; the out-projection's input, attention's bf16 output, is cast),
    one amax/scale update per layer and micro-batch over the recipe's amax history (3 tensors
    per FP8 GEMM, fp32, read and written), and a cast of its weights to FP8 and FP8^T once per
    step (in the block's ``optimizer`` ops: 2 bytes read, 2 written per element, sharded as the
    update is). ``Block.fp8_weight_bytes``: ``weight_copy_bytes`` per FP8-GEMM weight element.

    NVFP4 (an FP4 recipe given; NVIDIA's NVFP4 pre-training recipe, arXiv 2509.25149, as
    Transformer Engine runs it): the same four linear layers run their fprop, dgrad and wgrad
    GEMMs in FP4 (``Op.dtype="fp4"``, 0.5625-byte operands), except in the recipe's BF16 layers
    (``bf16_first_layers``, ``bf16_last_layers``); attention and everything else stay bf16. Each
    NVFP4 GEMM input (X, and dY before the dgrad) is quantised by an amax pass and a cast pass,
    with the recipe's random Hadamard transform on the wgrad copy
    (:func:`~hwsim.workloads.ops.nvfp4_quantise`); the layer's weights are quantised the same way
    (amax and cast to ``weight_copy_bytes``, in the forward, as the FP8 weight cast). There is no
    amax history (the scales are computed from each tensor: no delayed scaling).

    Returns
    -------
    ModelOps
        ``blocks``: ``embedding``, ``layer0`` .. ``layer{L-1}``, ``head``; ``params``,
        ``model_flops``, ``hardware_flops`` of this rank (the model's FLOPs are ``tp * cp`` times
        these; ``samples``, ``tokens_per_sample`` are the micro-batch's, shared by ``cp`` ranks);
        ``extra``: ``expert_params`` (this rank), ``total_params``, ``active_params``,
        ``alltoall_bytes`` (one of a MoE layer's 2 forward + 2 backward all-to-alls), ``spec``.
    """
    s = spec.seq_len if seq_len is None else seq_len
    if recompute not in RECOMPUTE_POLICIES:
        raise ValueError(f"recompute={recompute!r}; valid: {', '.join(RECOMPUTE_POLICIES)}")
    for key, v in zip(("micro_batch", "seq_len", "tp", "cp", "ep"), (micro_batch, s, tp, cp, ep)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{key}={v!r} must be a positive integer")
    if (spec.dense_layers or spec.shared_ffn_hidden
            or spec.expert_ffn_hidden != spec.ffn_hidden):
        raise ValueError(f"model {spec.name!r}: DeepSeek-style MoE layers (expert_ffn_hidden, "
                         f"shared_ffn_hidden, dense_layers) are modelled in serving only, not "
                         f"in training; valid for training: experts and top_k alone")
    if s % cp or spec.experts % ep:
        raise ValueError(f"need seq_len % cp == 0 ({s} % {cp}) and experts % ep == 0 "
                         f"({spec.experts} % {ep})")
    sp = sp and tp > 1  # as Megatron-LM, sequence parallelism is a no-op without TP
    h, a, d, f, V, E, k = (spec.hidden, spec.heads, spec.head_dim, spec.ffn_hidden, spec.vocab,
                           spec.experts, spec.top_k)
    kvd, t, moe = spec.kv_heads * d, tp, spec.experts > 1
    mb, vb = dtype_bytes(precision), storage_bytes(precision)
    recipe = fp8_recipe if precision == "fp8" else fp4_recipe if precision == "fp4" else None
    nv4 = recipe is not None and precision == "fp4"
    rht = recipe.hadamard_size if nv4 and recipe.hadamard_wgrad else 0
    copy_bytes = 0.0 if recipe is None else recipe.weight_copy_bytes if (
        nv4 or fp8_transpose) else recipe.weight_copy_bytes / 2  # FP8: value (+ transpose)
    dt = "bf16" if recipe is not None else ""    # every op's dtype under a recipe but FP8 GEMMs
    if recipe is not None:
        mb = 2                                   # bf16 operands of the GEMMs kept in bf16
    att_fp8 = recipe is not None and bool(recipe.attention)
    att_mb = 1 if att_fp8 else mb
    att_dt = "fp8" if att_fp8 else dt
    lin8 = ("nvfp4", "nvfp4") if nv4 else ("cast", "fused") if recipe is not None else ("", "")
    T = micro_batch * s / cp             # tokens of this rank (its context-parallel share)
    Tn = T / t if sp else T              # tokens of the norms, residuals (SP splits them)
    act = T * h * vb                     # one hidden-state tensor: the TP message
    col, row = ("col", "row") if t > 1 else ("", "")
    pc = spec.param_counts()
    nflop, gate, b1 = _NORM_FLOPS[spec.norm], 2 if spec.gated else 1, 1 if spec.bias else 0
    norm_p = (2 if spec.norm == "layernorm" else 1) * h
    shape = dict(seq_len=s, micro_batch=micro_batch, hidden=h, heads=a, tp=t, sp=sp, cp=cp,
                 flash_attention=flash_attention, kv_heads=spec.kv_heads, ffn_hidden=f,
                 gated=spec.gated, dropout=spec.dropout, top_k=k, value_bytes=vb,
                 fp8_linear_inputs=recipe is not None)
    layer_act = layer_activation_bytes(recompute=recompute, **shape)
    transient = layer_activation_bytes(**shape) if recompute != "none" else 0.0
    blocks: list[Block] = []  # transient: a recomputed layer's activations during its backward

    def opt(name: str, params: float) -> tuple[Op, ...]:
        return (Op(f"{name}.{optimizer}", 10.0 * params,
                   optimizer_op_bytes(params, optimizer, "bf16" if vb == 2 else precision),
                   dtype=dt),)

    def fp8_weight_cast(o: OpBuilder) -> Op:
        """The cast of a layer's FP8-GEMM weights to FP8 and FP8^T (read bf16, write 2 x 1
        byte), each micro-batch: under ZeRO-3/FSDP the weights are gathered afresh for every
        micro-batch (and TE casts what it is given); an upper bound for DDP with gradient
        accumulation, where Megatron-Core passes is_first_microbatch and TE caches them.
        NVFP4: an amax pass and a cast to both NVFP4 layouts (2 + 2 + ``weight_copy_bytes``)."""
        if nv4:
            return Op(f"{o.p}.nvfp4_weight_cast", 2.0 * o.fp8_weights,
                      (4.0 + recipe.weight_copy_bytes) * o.fp8_weights, dtype="bf16")
        return Op(f"{o.p}.fp8_weight_cast", 2.0 * o.fp8_weights,
                  (4.0 if fp8_transpose else 3.0) * o.fp8_weights, dtype="bf16")

    # -- embedding: vocab-parallel lookup (+ positions, segments), then the TP reduction -----
    emb_p = pc["embedding"] - V * h * (1 - 1 / t)
    e = OpBuilder("embedding", mb, vb, dt)
    tables = (spec.position == "learned") + (spec.type_vocab > 0)
    e.elementwise("lookup", T * h, float(tables), 2.0 + tables, grad_bytes=vb * emb_p)
    if t > 1:
        e.comm("tp_reducescatter" if sp else "tp_allreduce", act, name="lookup")
        if sp:
            e.comm("tp_allgather", act, backward=True, name="lookup.grad")
    # Korthikanti Sec 4.3: the embedding dropout mask, sbh/t under SP
    blocks.append(Block("embedding", "embedding", tuple(e.fwd), tuple(e.backward()),
                        opt("embedding", emb_p), emb_p, Tn * h * spec.dropout))

    # -- layers --------------------------------------------------------------------------------
    layer_p, expert_p = _rank_params(spec, t, ep)
    attn_flops = 4 * T * s * h / t
    # one fused kernel over micro_batch x heads/t heads, s/cp queries against s keys
    attn_shape = ("attention", micro_batch * a / t, T / micro_batch, s, d)
    kv_bytes = 2 * micro_batch * s * kvd / t * att_mb   # K and V of the whole sequence
    scores = T * s * a / t               # elements of the s x s score matrices of this rank
    drop = 1.0 if spec.dropout else 0.0
    a2a = T / t * k * h * vb if moe else 0.0         # routed tokens of this rank
    mt, ts = (T * k, act * k) if moe else (T, act)   # tokens through the FFN, its TP message
    for i in range(spec.layers):
        o = OpBuilder(f"layer{i}", mb, vb, dt, tp_overlap=tp_overlap,
                      fp8_transpose=fp8_transpose)
        li = lin8 if not nv4 or recipe.fp4_layer(i, spec.layers) else ("", "")
        o.elementwise("norm1", Tn * h, nflop, 2.0, grad_bytes=vb * norm_p)
        o.linear("qkv", T, h, (h + 2 * kvd) / t, grad_bytes=vb * (h + b1) * (h + 2 * kvd) / t,
                 tp=col, tp_bytes=act, sp=sp, fp8=li[1], rht=rht)
        if spec.position == "rope":
            o.elementwise("rope", T * (h + kvd) / t, 3.0, 2.0)
        if cp > 1:
            o.comm("cp_allgather", kv_bytes, async_=True, name="attention.kv")
        n_fwd = len(o.fwd)
        if flash_attention:  # one fused kernel: Q, K, V in, O out
            o.fwd.append(Op(f"layer{i}.attention", attn_flops,
                            att_mb * T * h / t + kv_bytes + vb * T * h / t, matmul=True,
                            shape=attn_shape, dtype=att_dt))
            unit = [Op(f"layer{i}.attention.grad", 2 * attn_flops,
                       4 * vb * T * h / t + 2 * kv_bytes, matmul=True, shape=attn_shape,
                       dtype=att_dt)]
        else:  # batched GEMMs around a separate softmax (+ dropout) pass over the scores
            o.fwd.append(Op(f"layer{i}.attention", attn_flops, att_mb * T * h / t + kv_bytes
                            + vb * T * h / t + 2 * vb * scores, matmul=True, dtype=att_dt))
            o.fwd.append(Op(f"layer{i}.attention.softmax", 5.0 * scores,
                            (2 * vb + drop * (2 * vb + 1)) * scores, dtype=dt))
            unit = [Op(f"layer{i}.attention.grad", 2 * attn_flops, 4 * vb * T * h / t
                       + 2 * kv_bytes + 4 * vb * scores, matmul=True, dtype=att_dt),
                    Op(f"layer{i}.attention.softmax.grad", 10.0 * scores,
                       (3 * vb + drop * (2 * vb + 1)) * scores, dtype=dt)]
        if recompute == "selective":
            unit[:0] = [recomputed(op) for op in o.fwd[n_fwd:]]
        if cp > 1:
            unit.append(Op(f"layer{i}.attention.kv.grad.cp_reducescatter", 0.0, 0.0,
                           comm="cp_reducescatter", comm_bytes=kv_bytes, comm_async=True))
        o.units.append(unit)
        o.linear("out_proj", T, h / t, h, grad_bytes=vb * (h * h / t + b1 * h), tp=row,
                 tp_bytes=act, sp=sp, fp8=li[0], rht=rht)
        o.elementwise("residual1", Tn * h, 2.0, 3.0)
        o.elementwise("norm2", Tn * h, nflop, 2.0, grad_bytes=vb * norm_p)
        if moe:
            o.linear("router", T / t, h, E, grad_bytes=vb * h * E)
            o.elementwise("router.topk", T / t * E, 4.0, 2.0)
            if ep > 1:  # dispatch routed tokens; in backward their gradients come back
                o.comm("ep_alltoall", a2a, name="moe.dispatch")
                o.comm("ep_alltoall", a2a, backward=True, name="moe.dispatch.grad")
        n_exp = E // ep if moe else 1
        o.linear("ffn_up", mt, h, gate * f / t, tp=col, tp_bytes=ts, sp=sp, expert=moe,
                 grad_bytes=vb * n_exp * (h + b1) * gate * f / t, fp8=li[1], rht=rht)
        o.elementwise(spec.activation, mt * f / t, 8.0, gate + 1.0)
        o.linear("ffn_down", mt, f / t, h, tp=row, tp_bytes=ts, sp=sp, expert=moe,
                 grad_bytes=vb * n_exp * (f * h / t + b1 * h), fp8=li[1], rht=rht)
        if moe:
            if ep > 1:
                o.comm("ep_alltoall", a2a, name="moe.combine")
                o.comm("ep_alltoall", a2a, backward=True, name="moe.combine.grad")
            o.elementwise("moe.combine", Tn * h * k, 2.0, 1.0 + 1.0 / k)
        o.elementwise("residual2", Tn * h, 2.0, 3.0)
        if o.fp8_gemms:  # the weight cast; FP8: TE's fused amax-history roll and scale update
            o.fwd.insert(0, fp8_weight_cast(o))
        if o.fp8_gemms and not nv4:
            o.fwd.append(Op(f"layer{i}.fp8_amax_update", 0.0,
                            2 * 4.0 * 3 * o.fp8_gemms * recipe.amax_history, dtype="bf16"))
        bwd = o.backward()
        if recompute == "full":
            # TE's recompute reuses the forward's scales: no second amax update
            bwd = [recomputed(op) for op in o.fwd
                   if not op.name.endswith("fp8_amax_update")] + bwd
        blocks.append(Block(f"layer{i}", "layer", tuple(o.fwd), tuple(bwd),
                            opt(f"layer{i}", layer_p), layer_p, layer_act,
                            transient, fp8_weight_bytes=(copy_bytes * o.fp8_weights
                                                         if o.fp8_gemms else 0.0)))

    # -- head: final norm, (BERT: MLM transform, pooler), vocab-parallel logits, loss --------
    o = OpBuilder("head", mb, vb, dt)
    o.elementwise("norm", Tn * h, nflop, 2.0, grad_bytes=vb * norm_p)
    if spec.encoder:
        o.linear("mlm_transform", T, h, h / t, grad_bytes=vb * (h * h + h) / t)
        o.elementwise("mlm_norm", T * h / t, nflop + 8.0, 2.0, grad_bytes=vb * norm_p)
        o.linear("pooler", micro_batch, h, h / t, grad_bytes=vb * (h * h + h) / t)
    o.linear("logits", T, h, V / t, tp=col, tp_bytes=act, sp=sp, grad_bytes=vb * V / t * (
        (0 if spec.tied_embeddings else h) + spec.encoder))  # BERT: the decoder's bias
    o.fwd.append(Op("head.cross_entropy", 5.0 * T * V / t, (vb + 4) * T * V / t, dtype=dt))
    o.units.append([Op("head.cross_entropy.grad", 3.0 * T * V / t, (vb + 4) * T * V / t,
                       dtype=dt)])
    if t > 1:  # vocab-parallel cross entropy: fp32 max, target logit, sum of exp per token
        o.comm("tp_allreduce", 3 * 4 * T, name="cross_entropy")
    split = (0 if spec.tied_embeddings else V * h) + (2 * (h * h + h) + V) * spec.encoder
    head_p = pc["head"] - split * (1 - 1 / t)
    # Korthikanti Sec 4.3: final-norm and output-layer inputs 2sbh each (/t under SP), fp32
    # logits of the cross entropy 4sbv/t
    head_act = 2 * vb * Tn * h + 4 * T * V / t
    blocks.append(Block("head", "head", tuple(o.fwd), tuple(o.backward()), opt("head", head_p),
                        head_p, head_act))
    extra = {"expert_params": expert_p * spec.layers, "total_params": pc["total"],
             "active_params": pc["active"], "alltoall_bytes": a2a if ep > 1 else 0.0, "spec": spec,
             "degrees": {"tp": tp, "cp": cp, "ep": ep}}
    return model_from_blocks(spec.name, blocks, samples=micro_batch, tokens_per_sample=s,
                             extra=extra)
