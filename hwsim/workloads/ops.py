"""Ops: the unit of work of a model, as pure data (FLOPs, bytes moved, parameters).

FLOP convention (DESIGN.md): 2 FLOPs per multiply-add; ``model_flops`` counts forward and
backward matmul FLOPs (backward = 2x forward) without recompute; ``hardware_flops`` adds the
matmul FLOPs that activation recompute executes again.

Communication is data too: an op whose ``comm`` is set is a collective (its ``flops`` and
``bytes`` are 0), placed in the op list where the framework issues it. Kinds, by process group:
``tp_allreduce``, ``tp_allgather``, ``tp_reducescatter`` (tensor parallel, Megatron-LM),
``cp_allgather``, ``cp_reducescatter`` (context parallel), ``ep_alltoall`` (expert parallel),
``mp_alltoall`` (model-parallel embedding tables). ``comm_bytes`` is the size of the full
(unsharded) buffer, as the ``size`` column of nccl-tests counts it: the all-reduced tensor, the
all-gather output, the reduce-scatter input, the all-to-all send buffer of one rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["Op", "Block", "ModelOps", "OpBuilder", "DTYPE_BYTES", "COMM_KINDS",
           "dtype_bytes", "op_precision", "recomputed", "model_from_blocks", "pipeline_stages"]

DTYPE_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp6": 0.75,
               "fp4": 0.5, "int8": 1}
"""Bytes per element of each precision (tf32 is stored as fp32)."""

COMM_KINDS = ("tp_allreduce", "tp_allgather", "tp_reducescatter", "cp_allgather",
              "cp_reducescatter", "ep_alltoall", "mp_alltoall")
"""Values of :attr:`Op.comm` (besides ``""``, a compute op)."""


def dtype_bytes(precision: str) -> float:
    try:
        return DTYPE_BYTES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(DTYPE_BYTES)}") from None


@dataclass(frozen=True)
class Op:
    """One op: ``flops`` (2 per multiply-add) and ``bytes`` read plus written from device memory.
    ``matmul`` ops count toward model FLOPs; ``grad_bytes`` > 0 marks the op after which that
    many bytes of gradients are ready (backward ops).

    ``comm`` (one of :data:`COMM_KINDS`) makes the op a collective of ``comm_bytes`` (see the
    module docstring). ``comm_async`` False: the next op waits for it (Megatron's forward
    all-reduces); True: it overlaps the next compute op only, and nothing after that op starts
    before it completes (Megatron's async dX all-reduce / reduce-scatter under the weight-grad
    GEMM, ring attention's K/V exchange). ``recompute`` marks a forward op re-run in backward by
    activation recompute (counted in hardware FLOPs, not model FLOPs). ``expert``: the
    gradients are of expert parameters (a mixture-of-experts FFN), reduced over the
    expert-data-parallel group rather than the whole data-parallel group.

    ``shape``: the op's kernel shape where it is one kernel the device's kernel model times
    (:mod:`hwsim.catalog.kernels`): ``("gemm", M, N, K)`` for ``C[M,N] = A[M,K] B[K,N]``,
    ``("attention", bh, s_q, s_kv, head_dim)`` for a fused flash attention kernel; empty for
    ops timed by FLOPs and bytes alone. ``fused``: the op runs inside a neighbouring kernel (a
    weight-only GEMM's dequantisation), so it launches nothing of its own.

    ``dtype``: the precision the op runs at where it differs from the job's (a precision of
    :data:`DTYPE_BYTES`); empty: the job's ``precision``. An FP8 recipe
    (:mod:`hwsim.workloads.fp8`) sets it on every op: ``fp8`` on the GEMMs it runs in FP8,
    ``bf16`` on the rest (attention, the LM head, memory-bound ops)."""

    name: str
    flops: float
    bytes: float
    matmul: bool = False
    grad_bytes: float = 0.0
    comm: str = ""
    comm_bytes: float = 0.0
    comm_async: bool = False
    recompute: bool = False
    expert: bool = False
    shape: tuple = ()
    dtype: str = ""
    fused: bool = False


def recomputed(op: Op) -> Op:
    """*op* run again by activation recompute: named ``<name>.recompute``, ``recompute`` set
    (``dataclasses.replace`` without its per-field introspection: a model's recompute copies
    are made for every layout a search plans)."""
    new = object.__new__(Op)
    new.__dict__.update(op.__dict__, name=op.name + ".recompute", recompute=True)
    return new


def op_precision(op: Op, precision: str) -> str:
    """The precision *op* runs at in a job of *precision*: its own ``dtype`` when set."""
    return op.dtype or precision


def _flops(ops: Sequence[Op], hardware: bool) -> float:
    return sum(op.flops for op in ops if op.matmul and (hardware or not op.recompute))


@dataclass(frozen=True)
class Block:
    """A contiguous piece of a model that a pipeline stage takes whole: ``kind`` is
    ``embedding``, ``layer`` or ``head`` for transformers (``stem``/``block``/``head`` for CNNs).
    ``forward``/``backward`` in execution order (backward includes recomputed ops); ``params``
    and ``activation_bytes`` (kept for backward, one micro-batch) on one rank;
    ``fp8_weight_bytes``: the FP8 copies of its weights an FP8 recipe keeps beside them
    (:mod:`hwsim.workloads.fp8`), on one rank before any ZeRO sharding."""

    name: str
    kind: str
    forward: tuple[Op, ...]
    backward: tuple[Op, ...]
    optimizer: tuple[Op, ...] = ()
    params: float = 0.0
    activation_bytes: float = 0.0
    workspace_bytes: float = 0.0
    fp8_weight_bytes: float = 0.0

    @property
    def model_flops(self) -> float:
        return _flops(self.forward + self.backward, False)

    @property
    def hardware_flops(self) -> float:
        return _flops(self.forward + self.backward, True)


@dataclass(frozen=True)
class ModelOps:
    """A model's ops for one micro-batch on one device, and its sizes.

    ``forward``/``backward`` in execution order; ``optimizer`` the update ops; ``params`` the
    parameter count; ``activation_bytes`` the activations kept for backward;
    ``model_flops`` forward + backward matmul FLOPs of the micro-batch; ``hardware_flops`` the
    matmul FLOPs executed including recompute (defaults to ``model_flops``); ``blocks`` the same
    ops by block (empty for models built without blocks), for pipeline stages.
    """

    name: str
    forward: tuple[Op, ...]
    backward: tuple[Op, ...]
    optimizer: tuple[Op, ...]
    params: float
    activation_bytes: float
    model_flops: float
    samples: int
    tokens_per_sample: int = 1
    extra: dict = field(default_factory=dict)
    hardware_flops: float | None = None
    blocks: tuple[Block, ...] = ()

    def __post_init__(self) -> None:
        if self.hardware_flops is None:
            object.__setattr__(self, "hardware_flops", self.model_flops)

    def select(self, start: int, stop: int) -> ModelOps:
        """The model restricted to ``blocks[start:stop]`` (a pipeline stage or chunk)."""
        if not self.blocks:
            raise ValueError(f"model {self.name!r} has no blocks to select from")
        if not 0 <= start < stop <= len(self.blocks):
            raise ValueError(f"block range [{start}, {stop}) outside [0, {len(self.blocks)})")
        return model_from_blocks(self.name, self.blocks[start:stop], samples=self.samples,
                                 tokens_per_sample=self.tokens_per_sample, extra=self.extra)


def model_from_blocks(name: str, blocks: Sequence[Block], *, samples: int,
                      tokens_per_sample: int = 1, extra: dict | None = None) -> ModelOps:
    """A :class:`ModelOps` whose op lists are the blocks' in order (backward in reverse block
    order) and whose sizes are their sums."""
    blocks = tuple(blocks)
    fwd = tuple(op for b in blocks for op in b.forward)
    bwd = tuple(op for b in reversed(blocks) for op in b.backward)
    return ModelOps(name=name, forward=fwd, backward=bwd,
                    optimizer=tuple(op for b in blocks for op in b.optimizer),
                    params=sum(b.params for b in blocks),
                    activation_bytes=sum(b.activation_bytes for b in blocks),
                    model_flops=_flops(fwd + bwd, False), samples=samples,
                    tokens_per_sample=tokens_per_sample, extra=dict(extra or {}),
                    hardware_flops=_flops(fwd + bwd, True), blocks=blocks)


def _chunk_sizes(n: int, chunks: int) -> list[int]:
    # Even split; the remainder goes to the middle chunks first, so the first and last chunks
    # (which also hold the embedding and the output layer) get fewer layers, as Llama 3's
    # 126 layers on 16 stages (arXiv 2407.21783 Sec 3.3.2: one layer fewer on the first and last).
    base, extra = divmod(n, chunks)
    sizes = [base] * chunks
    order = list(range(1, chunks - 1)) + [chunks - 1, 0] if chunks > 2 else list(range(chunks))
    for c in order[:extra]:
        sizes[c] += 1
    return sizes


def pipeline_stages(model: ModelOps, pp: int, virtual_stages: int = 1) -> list[list[ModelOps]]:
    """Split *model* into ``pp`` stages of ``virtual_stages`` chunks: ``result[stage][chunk]``.

    Layers (blocks of kind other than ``embedding``/``head``) are spread over the
    ``pp * virtual_stages`` virtual stages in order; virtual stage ``j * pp + i`` is chunk *j*
    of stage *i* (Megatron-LM's interleaved assignment, Narayanan et al. 2021 Sec 2.2.2). The
    embedding goes with virtual stage 0, the head with the last one.
    """
    if pp < 1 or virtual_stages < 1:
        raise ValueError(f"pp={pp} and virtual_stages={virtual_stages} must be >= 1")
    blocks = model.blocks
    if not blocks:
        raise ValueError(f"model {model.name!r} has no blocks to split into pipeline stages")
    pre = [i for i, b in enumerate(blocks) if b.kind == "embedding"]
    post = [i for i, b in enumerate(blocks) if b.kind == "head"]
    body = [i for i in range(len(blocks)) if i not in pre and i not in post]
    chunks = pp * virtual_stages
    if len(body) < chunks:
        raise ValueError(f"{len(body)} layers cannot fill {pp} stages x {virtual_stages} chunks")
    sizes = _chunk_sizes(len(body), chunks)
    out: list[list[ModelOps]] = [[] for _ in range(pp)]
    pos = 0
    for v in range(chunks):
        idx = body[pos:pos + sizes[v]]
        pos += sizes[v]
        idx = (pre if v == 0 else []) + idx + (post if v == chunks - 1 else [])
        sub = model_from_blocks(model.name, [blocks[i] for i in idx], samples=model.samples,
                                tokens_per_sample=model.tokens_per_sample, extra=model.extra)
        out[v % pp].append(sub)
    return out


NVFP4_BYTES = 0.5 + 1.0 / 16
"""Bytes per NVFP4 element: a 4-bit E2M1 value and an E4M3 scale per 16 values (NVIDIA,
arXiv 2509.25149; :mod:`hwsim.workloads.quant` counts ``fp4`` weights the same)."""


def nvfp4_quantise(prefix: str, elems: float, rht: int = 0) -> list[Op]:
    """The two memory-bound passes that quantise one bf16 tensor of *elems* values to NVFP4
    (:meth:`OpBuilder.linear`): the amax pass (reads 2 bytes per value: the FP32 per-tensor
    scale needs the whole tensor's amax first) and the cast (reads 2, writes a row-wise and a
    column-wise NVFP4 copy); *rht* > 0: the column-wise copy is transformed by an rht-point
    random Hadamard transform in both passes (``2 * rht`` FLOPs per value each)."""
    f = 2.0 * rht * elems
    return [Op(f"{prefix}.nvfp4_amax", f, 2.0 * elems, dtype="bf16"),
            Op(f"{prefix}.nvfp4_cast", f, (2.0 + 2 * NVFP4_BYTES) * elems, dtype="bf16")]


class OpBuilder:
    """Builds one block: forward ops in order, and per unit its backward ops (emitted in
    reverse unit order by :meth:`backward`). GEMM operands are read at ``mb`` bytes per value,
    everything else at ``vb``."""

    def __init__(self, prefix: str, mb: float, vb: float, dtype: str = "",
                 tp_overlap: bool = False, fp8_transpose: bool = True) -> None:
        self.p, self.mb, self.vb, self.dtype = prefix, mb, vb, dtype
        self.fp8_transpose = fp8_transpose  # FP8 casts also write X^T (TN-only FP8 GEMMs)
        self.tp_overlap = tp_overlap  # TP collectives pipelined with their GEMMs (see linear)
        self.fwd: list[Op] = []
        self.units: list[list[Op]] = []
        self.fp8_gemms = 0          # linear layers run in FP8 (:meth:`linear` with ``fp8``)
        self.fp8_weights = 0.0      # their weight elements, cast to FP8 once per step

    def comm(self, kind: str, nbytes: float, *, backward: bool = False, async_: bool = False,
             name: str = "") -> None:
        """A collective (named ``prefix.name.kind``) at the current point of the forward, or
        (``backward``) at the start of the last unit's backward."""
        label = f"{self.p}.{name}.{kind}" if name else f"{self.p}.{kind}"
        op = Op(label, 0.0, 0.0, comm=kind, comm_bytes=nbytes, comm_async=async_)
        if backward:
            self.units[-1].insert(0, op)
        else:
            self.fwd.append(op)

    def elementwise(self, name: str, elems: float, flops_per: float, touches: float,
                    grad_bytes: float = 0.0, grad_touches: float | None = None) -> None:
        """A memory-bound op over *elems* values, each read or written *touches* times; its
        gradient reads one tensor more (or *grad_touches* times, when given)."""
        gt = touches + 1 if grad_touches is None else grad_touches
        self.fwd.append(Op(f"{self.p}.{name}", elems * flops_per, self.vb * elems * touches,
                           dtype=self.dtype))
        self.units.append([Op(f"{self.p}.{name}.grad", 2 * elems * flops_per,
                              self.vb * elems * gt, grad_bytes=grad_bytes, dtype=self.dtype)])

    def linear(self, name: str, m: float, k: float, n: float, *, grad_bytes: float,
               tp: str = "", tp_bytes: float = 0.0, sp: bool = False,
               dgrad: bool = True, expert: bool = False, fp8: str = "", rht: int = 0) -> None:
        """``Y[m,n] = X[m,k] W[k,n]``: forward, dgrad (dX) and wgrad (dW; *grad_bytes* of
        gradients ready after it). ``tp="col"``: column-parallel (Megatron-LM): under sequence
        parallelism X is all-gathered before it; in backward dX is all-reduced
        (reduce-scattered under SP, X re-gathered for wgrad) overlapped with the GEMMs as
        Megatron-LM overlaps them. ``tp="row"``: row-parallel: Y is all-reduced (reduce-scattered
        under SP); in backward under SP dY is all-gathered first. *tp_bytes*: the message.
        *expert*: W holds expert parameters (:attr:`Op.expert`).

        *fp8* (``"cast"`` or ``"fused"``): an FP8 recipe runs the three GEMMs in FP8 (1-byte
        operands, ``dtype="fp8"``) and adds its memory-bound kernels (Transformer Engine's
        ``Linear``; see :mod:`hwsim.workloads.transformer`): before the forward GEMM the input
        cast, which reads X in bf16 and writes X and X^T in FP8 (``"cast"``, 4 bytes per
        element), or, where the producing norm or activation already writes FP8 (``"fused"``:
        TE's LayerNormLinear / LayerNormMLP), the transpose alone (reads and writes 1 byte);
        before the dgrad the gradient's cast-transpose (4 bytes per element of dY). The scale
        and amax are computed inside these passes (delayed scaling: one read per cast). The
        weight's cast is counted once per step (:attr:`fp8_weights`). Where the device's FP8
        GEMMs take any layout (:attr:`fp8_transpose` False: Blackwell), no FP8^T is written:
        the casts write 1 byte per element instead of 2 and the fused transpose is gone.

        *fp8* ``"nvfp4"``: an NVFP4 recipe (:mod:`hwsim.catalog.fp4`) runs the three GEMMs in
        FP4 (:data:`NVFP4_BYTES` per operand element, ``dtype="fp4"``); X before the forward and
        dY before the dgrad each take an amax pass (reads the bf16 tensor) and a cast pass (reads
        it again, writes the row- and column-wise NVFP4 copies); with *rht* (the Hadamard size,
        0: none) the column-wise copy, the wgrad operand, is Hadamard-transformed in both passes,
        ``2 * rht`` FLOPs per element.

        With :attr:`tp_overlap` and sequence parallelism (Megatron-Core ``--tp-comm-overlap``,
        Transformer Engine's userbuffers: the GEMM and its collective are cut into chunks and
        pipelined), every TP collective of the layer runs asynchronously beside the GEMM it
        feeds or drains: the forward all-gather beside the column-parallel GEMM, the forward
        reduce-scatter beside the row-parallel GEMM that produces it, the backward all-gather of
        dY beside the row-parallel dgrad; it is emitted just before that GEMM as an asynchronous
        collective (``comm_async``: it overlaps the next compute op, the GEMM, and the op after
        waits for it). Without SP the flag changes nothing (the overlap needs SP)."""
        mb, vb, p = self.mb, self.vb, self.p
        dt = self.dtype
        nv4 = fp8 == "nvfp4"
        if fp8:
            if fp8 not in ("cast", "fused", "nvfp4"):
                raise ValueError(f"fp8={fp8!r}; valid: cast, fused, nvfp4, or empty")
            mb, dt = (NVFP4_BYTES, "fp4") if nv4 else (1, "fp8")
            self.fp8_gemms += 1
            self.fp8_weights += k * n
        ov = self.tp_overlap and sp
        if tp == "col" and sp and not ov:
            self.comm("tp_allgather", tp_bytes, name=name)
        tr = 1.0 if self.fp8_transpose else 0.0   # bytes per element of the FP8^T copy
        if nv4:
            self.fwd += nvfp4_quantise(f"{p}.{name}", m * k, rht)
        elif fp8 == "cast":
            self.fwd.append(Op(f"{p}.{name}.fp8_cast", 2 * m * k, (3 + tr) * m * k,
                               dtype="bf16"))
        elif fp8 == "fused" and self.fp8_transpose:
            self.fwd.append(Op(f"{p}.{name}.fp8_transpose", 0.0, 2 * m * k, dtype="bf16"))
        if ov and tp in ("col", "row"):  # pipelined beside the GEMM that follows
            kind = "tp_allgather" if tp == "col" else "tp_reducescatter"
            self.comm(kind, tp_bytes, async_=True, name=name)
        self.fwd.append(Op(f"{p}.{name}", 2 * m * k * n, mb * (m * k + k * n) + vb * m * n,
                           matmul=True, shape=("gemm", m, n, k), dtype=dt))
        red = "tp_reducescatter" if sp else "tp_allreduce"
        bwd: list[Op] = []
        dy_gather = Op(f"{p}.{name}.grad.tp_allgather", 0.0, 0.0, comm="tp_allgather",
                       comm_bytes=tp_bytes, comm_async=ov)
        if tp == "row" and sp and not ov:
            bwd.append(dy_gather)
        if nv4:
            bwd += nvfp4_quantise(f"{p}.{name}.grad", m * n, rht)
        elif fp8:
            bwd.append(Op(f"{p}.{name}.grad.fp8_cast", 2 * m * n, (3 + tr) * m * n,
                          dtype="bf16"))
        if tp == "row" and ov:
            bwd.append(dy_gather)  # pipelined beside the dgrad (or, without one, wgrad) GEMM
        if tp == "col" and sp:
            bwd.append(Op(f"{p}.{name}.wgrad_input.tp_allgather", 0.0, 0.0,
                          comm="tp_allgather", comm_bytes=tp_bytes, comm_async=True))
        if dgrad:
            bwd.append(Op(f"{p}.{name}.dgrad", 2 * m * k * n, mb * (m * n + k * n) + vb * m * k,
                          matmul=True, shape=("gemm", m, k, n), dtype=dt))
        if tp == "col":
            bwd.append(Op(f"{p}.{name}.dgrad.{red}", 0.0, 0.0, comm=red, comm_bytes=tp_bytes,
                          comm_async=True))
        bwd.append(Op(f"{p}.{name}.wgrad", 2 * m * k * n, mb * (m * k + m * n) + vb * k * n,
                      matmul=True, grad_bytes=grad_bytes, expert=expert, shape=("gemm", k, n, m),
                      dtype=dt))
        self.units.append(bwd)
        if tp == "row" and not ov:
            self.comm(red, tp_bytes, name=name)

    def backward(self) -> list[Op]:
        return [op for unit in reversed(self.units) for op in unit]


OPTIMIZER_STATE_BYTES = {"adam": 8.0, "adamw": 8.0, "sgd": 0.0}
"""fp32 optimizer state bytes per parameter: Adam/AdamW keep two moments (m, v); plain SGD none."""


def optimizer_op_bytes(params: float, optimizer: str, precision: str) -> float:
    """Bytes an optimizer step reads and writes per parameter tensor of *params* elements:
    read param, grad and states, write param and states (fp32 master weights under mixed
    precision, as in ZeRO's 16 bytes per parameter accounting)."""
    state = OPTIMIZER_STATE_BYTES[optimizer]
    master = 4.0 if dtype_bytes(precision) < 4 else 0.0
    p = dtype_bytes(precision)
    return params * (2 * p + p + 2 * (state + master))
