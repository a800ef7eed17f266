"""Bytes per device of a training configuration: weights, gradients, optimizer states (by ZeRO
stage), activations (by recompute policy, tensor/sequence/context parallelism and the
micro-batches in flight of the pipeline schedule) and workspace. Pure functions; whether the
total fits a device is the caller's question.

Sources
-------
- ZeRO: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models" (arXiv 1910.02054), Sec 3.1 and 5: mixed-precision Adam keeps 2 (fp16 weights) + 2
  (fp16 gradients) + 12 (fp32 master weights, momentum, variance) = 16 bytes per parameter;
  stage 1 partitions the optimizer states over the data-parallel ranks, stage 2 also the
  gradients, stage 3 (= PyTorch FSDP FULL_SHARD) also the weights.
- Activations: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models" (arXiv 2205.05198), Sec 4 and Table 2 (per layer, 2-byte activations, 1-byte dropout
  masks): ``sbh(34 + 5as/h)``; tensor parallel ``sbh(10 + 24/t + 5as/(ht))``; tensor + sequence
  parallel ``sbh/t (34 + 5as/h)``; selective recompute drops the ``5as/h`` term; full recompute
  keeps ``2sbh``, the layer input (``/t`` under sequence parallelism, where Megatron-LM stores the
  sequence-sharded input). Sec 4.2.3: the micro-batches in flight of 1F1B and interleaved 1F1B.
"""

from __future__ import annotations

from hwsim.workloads.ops import OPTIMIZER_STATE_BYTES, Block, ModelOps, dtype_bytes

__all__ = ["RECOMPUTE_POLICIES", "SCHEDULES", "storage_bytes", "state_bytes",
           "layer_activation_bytes", "inflight_microbatches", "training_memory"]

RECOMPUTE_POLICIES = ("none", "selective", "full")
SCHEDULES = ("gpipe", "1f1b", "interleaved")


def storage_bytes(precision: str) -> int:
    """Bytes per stored weight, gradient or activation element under *precision*: fp8 training
    keeps bf16 weights, gradients and activations and casts to fp8 only for the GEMMs
    (NVIDIA Transformer Engine), so fp8 stores 2 bytes, and so does fp4 (NVFP4 training casts
    the linear layers' GEMM inputs the same way; W4A4 serving keeps 16-bit activations,
    :mod:`hwsim.workloads.inference`); otherwise the dtype's size."""
    return 2 if precision in ("fp8", "fp4") else dtype_bytes(precision)


def state_bytes(params: float, *, precision: str = "bf16", optimizer: str = "adam", dp: int = 1,
                zero: int = 0, expert_params: float = 0.0, ep: int = 1,
                grad_bytes: float | None = None) -> dict[str, float]:
    """Bytes per device of weights, gradients and optimizer states.

    Parameters
    ----------
    params : float
        Parameters held by this device (after tensor/pipeline/expert sharding), experts included.
    precision : str
        Training precision; below 4 bytes it is mixed precision with fp32 master weights.
    optimizer : {"adam", "adamw", "sgd"}
        Adam/AdamW keep two fp32 moments (8 bytes/param), SGD none.
    dp, zero : int
        Data-parallel degree and ZeRO stage 0-3 (3 = FSDP). Stage >= 1 divides the optimizer
        states by ``dp``, >= 2 also the gradients, 3 also the weights (ZeRO paper Sec 5).
    expert_params, ep : float, int
        Of *params*, those of MoE experts; they are sharded over the expert-data-parallel group
        of ``dp // ep`` ranks instead of ``dp`` (Megatron-Core MoE).
    grad_bytes : float, optional
        Bytes per stored gradient element; default the training precision's
        (:func:`storage_bytes`). A stack that accumulates gradients in fp32 (Megatron's
        ``main_grad`` buffers, FSDP's upcast sharded gradients) passes 4
        (:meth:`~hwsim.catalog.stacks.StackProfile.memory_overheads`).

    Returns
    -------
    dict
        ``weights``, ``gradients``, ``optimizer_states`` in bytes.
    """
    if zero not in (0, 1, 2, 3):
        raise ValueError(f"zero={zero!r}; valid: 0, 1, 2, 3 (3 = FSDP)")
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZER_STATE_BYTES)}")
    if dp < 1 or ep < 1 or dp % ep:
        raise ValueError(f"dp={dp} must be >= 1 and a multiple of ep={ep}")
    w = storage_bytes(precision)
    opt = OPTIMIZER_STATE_BYTES[optimizer] + (4.0 if w < 4 else 0.0)
    dense, experts = params - expert_params, expert_params

    def sharded(per_param: float, on: bool) -> float:
        return per_param * (dense / (dp if on else 1) + experts / (dp // ep if on else 1))

    g = w if grad_bytes is None else grad_bytes
    return {"weights": sharded(w, zero >= 3), "gradients": sharded(g, zero >= 2),
            "optimizer_states": sharded(opt, zero >= 1)}


def layer_activation_bytes(*, seq_len: int, micro_batch: int, hidden: int, heads: int,
                           tp: int = 1, sp: bool = False, cp: int = 1, recompute: str = "none",
                           flash_attention: bool = False, kv_heads: int | None = None,
                           ffn_hidden: int | None = None, gated: bool = False,
                           dropout: bool = True, top_k: int = 1, value_bytes: int = 2,
                           fp8_linear_inputs: bool = False) -> float:
    """Activation bytes one transformer layer keeps for backward, per micro-batch and rank.

    Korthikanti et al. 2022 Sec 4.1, generalised term by term (s = seq_len, b = micro_batch,
    h = hidden, a = heads, t = tp, 2-byte values, 1-byte dropout masks). Attention: norm input
    2sbh, QKV input 2sbh, Q 2sbh, K and V 4sbh*kv/a, softmax output 2as^2b, its dropout mask
    as^2b and output 2as^2b, out-projection input 2sbh, dropout mask sbh. MLP: norm input 2sbh,
    input 2sbh, then 2sbf per intermediate tensor (GELU: input and output, 4sbf; gated: gate,
    up and product, 6sbf), dropout mask sbh. With the defaults (kv = a, f = 4h, not gated,
    dropout) this is exactly ``sbh(34 + 5as/h)``. Terms split by tensor parallelism: Q, K, V,
    scores, out-projection input and MLP intermediates; the rest (10 sbh) is replicated unless
    ``sp``. ``top_k`` > 1 (MoE) multiplies the MLP input copy and intermediates per token.
    ``flash_attention`` or ``recompute="selective"`` drops the s^2 terms; ``"full"`` keeps 2sbh.
    ``cp`` splits the sequence: s/cp local queries against s keys. ``value_bytes`` scales the
    2-byte terms (4 for fp32 training); masks stay 1 byte. ``fp8_linear_inputs``: an FP8 recipe
    keeps the FP8 cast of each linear layer's input for its wgrad GEMM instead of the 16-bit
    tensor (Transformer Engine's Linear / LayerNormLinear / LayerNormMLP save the FP8 input),
    so the QKV, out-projection, MLP and second-MLP-GEMM inputs take 1 byte per value.
    """
    if recompute not in RECOMPUTE_POLICIES:
        raise ValueError(f"recompute={recompute!r}; valid: {', '.join(RECOMPUTE_POLICIES)}")
    kv = heads if kv_heads is None else kv_heads
    f = 4 * hidden if ffn_hidden is None else ffn_hidden
    s_local = seq_len / cp
    sbh = s_local * micro_batch * hidden
    v = value_bytes / 2.0  # factor on the 2-byte terms
    if recompute == "full":
        return 2.0 * v * sbh / (tp if sp else 1)
    mask = 1.0 if dropout else 0.0
    replicated = 2 * (4 * v) + 2 * mask  # two norm inputs + QKV input + MLP input; two masks
    mlp_mid = (6.0 if gated else 4.0) * f / hidden
    split = v * (2 + 4 * kv / heads + 2 + top_k * mlp_mid)
    replicated += (top_k - 1) * 2 * v  # MoE: dispatched token copies beyond the first
    if fp8_linear_inputs:  # QKV and MLP inputs; out-projection and second MLP GEMM inputs
        replicated -= 2 * (2 * v - 1)
        split -= (2 * v - 1) * (1 + top_k * f / hidden)
    per_sbh = replicated / (tp if sp else 1) + split / tp
    total = per_sbh * sbh
    if not flash_attention and recompute == "none":
        score = (2 * v + mask + 2 * v) if dropout else 2 * v  # softmax out, mask, dropout out
        total += score * heads * s_local * seq_len * micro_batch / tp
    return total


def inflight_microbatches(schedule: str, *, pp: int, micro_batches: int, stage: int = 0,
                          virtual_stages: int = 1) -> float:
    """Micro-batches whose activations a pipeline stage holds at its peak, in units of one
    micro-batch through all of the stage's layers.

    GPipe: all ``m`` (Huang et al. 2019). 1F1B: ``min(p - stage, m)`` (Narayanan et al. 2021
    Sec 2.2.1). Interleaved 1F1B with ``v`` chunks: Megatron-LM's warm-up of
    ``2(p - stage - 1) + (v - 1)p`` chunk micro-batches plus the one in flight, each a ``1/v``
    share of the stage's layers; for stage 0 that is ``p (1 + (p-1)/(pv))`` (Korthikanti et al.
    2022 Sec 4.2.3). Without pipelining (``p = 1``) one micro-batch at a time.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; valid: {', '.join(SCHEDULES)}")
    if pp < 1 or micro_batches < 1 or virtual_stages < 1 or not 0 <= stage < pp:
        raise ValueError(f"need pp >= 1, micro_batches >= 1, virtual_stages >= 1 and "
                         f"0 <= stage < pp; got pp={pp}, micro_batches={micro_batches}, "
                         f"virtual_stages={virtual_stages}, stage={stage}")
    if pp == 1:
        return 1.0
    if schedule == "gpipe":
        return float(micro_batches)
    if schedule == "1f1b" or virtual_stages == 1:
        return float(min(pp - stage, micro_batches))
    v = virtual_stages
    chunks = 2 * (pp - stage - 1) + (v - 1) * pp + 1
    return min(chunks, micro_batches * v) / v


def training_memory(model: ModelOps, *, precision: str = "bf16", optimizer: str = "adam",
                    dp: int = 1, zero: int = 0, ep: int = 1, pp: int = 1, stage: int = 0,
                    schedule: str = "1f1b", micro_batches: int = 1, virtual_stages: int = 1,
                    workspace_bytes: float = 0.0, grad_bytes: float | None = None,
                    context_bytes: float = 0.0, comm_buffer_bytes: float = 0.0
                    ) -> dict[str, float]:
    """Bytes per device, by label, of one rank running *model*.

    Parameters
    ----------
    model : ModelOps
        The ops of this device: one tensor-parallel rank, restricted to its pipeline stage's
        blocks (all chunks of the stage under interleaving). Its ``params``,
        ``activation_bytes`` (one micro-batch, by the recompute policy it was built with) and
        ``extra["expert_params"]`` are used.
    precision, optimizer, dp, zero, ep
        As in :func:`state_bytes` (``zero=3`` is FSDP).
    pp, stage, schedule, micro_batches, virtual_stages
        The pipeline: activations are multiplied by :func:`inflight_microbatches`.
    workspace_bytes : float
        Fixed extra (the input batch, library workspaces), added to ``workspace``.
    grad_bytes : float, optional
        As in :func:`state_bytes` (the stack's main-gradient precision).
    context_bytes, comm_buffer_bytes : float
        The software stack's fixed overheads per device
        (:meth:`~hwsim.catalog.stacks.StackProfile.memory_overheads`): the CUDA context with the
        libraries' kernels, and the communication library's buffers of every communicator the
        rank is in. Each becomes its own line (``context``, ``comm_buffers``) when nonzero.

    Returns
    -------
    dict
        ``weights``, ``gradients``, ``optimizer_states``, ``activations``, ``workspace`` and,
        for ZeRO-3, ``zero3_buffers`` (two blocks of gathered weights: the current one and the
        prefetched next, FSDP's default), ``context`` and ``comm_buffers`` where nonzero, in
        bytes.
    """
    out = state_bytes(model.params, precision=precision, optimizer=optimizer, dp=dp, zero=zero,
                      expert_params=model.extra.get("expert_params", 0.0), ep=ep,
                      grad_bytes=grad_bytes)
    inflight = inflight_microbatches(schedule, pp=pp, micro_batches=micro_batches, stage=stage,
                                     virtual_stages=virtual_stages)
    out["activations"] = model.activation_bytes * inflight
    blocks: tuple[Block, ...] = model.blocks
    transient = max((b.workspace_bytes for b in blocks), default=0.0)
    out["workspace"] = transient + workspace_bytes
    fp8 = sum(b.fp8_weight_bytes for b in blocks)
    if fp8:  # an FP8 recipe's weight copies, sharded as the weights are (ZeRO-3/FSDP)
        out["fp8_weights"] = fp8 / (dp if zero >= 3 else 1)
    if zero == 3:
        biggest = max((b.params for b in blocks), default=model.params)
        out["zero3_buffers"] = 2.0 * biggest * storage_bytes(precision)
    if context_bytes:
        out["context"] = float(context_bytes)
    if comm_buffer_bytes:
        out["comm_buffers"] = float(comm_buffer_bytes)
    return out
