"""What a Megatron-style 3D-parallel training run needs, resolved: :class:`ParallelPlan` and
:func:`parallel_plan`, which splits one tensor-parallel rank's ops into pipeline stages and
computes each stage's memory. Pure data; the SimPy side is :mod:`hwsim.jobs.parallel`.

Rank layout (Megatron-LM's ``initialize_model_parallel``): tensor-parallel fastest, then context
parallel, then data parallel, then pipeline. A *lane* is one (data-parallel index, context-parallel
index) pair, ``lane = dp_idx * cp + cp_idx``, and ``rank = pp_idx * (lanes * tp) + lane * tp +
tp_idx`` over the devices in their natural order, so a TP group sits inside a server and pipeline
stages are furthest apart. Expert parallelism divides the data-parallel dimension: the EP group of
a rank is the ``ep`` consecutive data-parallel indices around it (same cp and tp index), and its
expert parameters are reduced over the ``dp / ep`` ranks holding the same experts (the
expert-data-parallel group, with every cp index), its dense ones over all ``dp x cp`` lanes.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Sequence

from hwsim.jobs.checkpoint import CheckpointPlan
from hwsim.jobs.inputs import DataPlan
from hwsim.jobs.schedules import SCHEDULES
from hwsim.workloads import ModelOps, model_from_blocks, pipeline_stages, training_memory
from hwsim.workloads.memory import storage_bytes

__all__ = ["ParallelPlan", "parallel_plan", "IMPLEMENTED_ZERO", "TP_COMMS", "COMMS", "OFFLOAD",
           "device_kinds"]

OFFLOAD = ("none", "cpu", "nvme")
"""Where optimizer states can live (see :class:`ParallelPlan`)."""

IMPLEMENTED_ZERO = (0, 1, 2, 3)
"""ZeRO stages the job runs: 0 (gradient all-reduce), 1 and 2 (reduce-scatter of gradients,
sharded optimizer step, all-gather of parameters: Megatron's distributed optimizer), 3 (FSDP:
per-block parameter all-gathers before forward and backward, per-block gradient
reduce-scatters)."""

COMMS = {"tp_allreduce": ("tp", "allreduce"), "tp_allgather": ("tp", "allgather"),
         "tp_reducescatter": ("tp", "reduce_scatter"), "cp_allgather": ("cp", "allgather"),
         "cp_reducescatter": ("cp", "reduce_scatter"), "ep_alltoall": ("ep", "alltoall"),
         "mp_alltoall": ("ep", "alltoall")}
"""Op communication kinds, the group each runs over (tensor, context or expert parallel: DLRM's
model-parallel embedding exchange uses the ``ep`` ranks) and its collective."""
TP_COMMS = {k: v[1] for k, v in COMMS.items() if v[0] == "tp"}
"""The tensor-parallel ones, and their collectives."""


@dataclass(frozen=True)
class ParallelPlan:
    """A 3D-parallel (TP x PP x DP) training run.

    ``stages[s][c]`` holds the ops of chunk *c* of pipeline stage *s* for ONE tensor-parallel
    (and context-parallel) rank (every such rank runs the same ops). ``devices`` are
    ``tp * cp * pp * dp`` device nodes in natural order, laid out as :meth:`device` says. Each step runs ``micro_batches``
    micro-batches through the ``schedule`` (``gpipe``, ``1f1b``, ``interleaved`` with
    ``virtual_stages`` chunks). ``p2p_bytes``: bytes one TP rank sends across a stage boundary
    per micro-batch (activation forward, its gradient backward). ``memory[s]``: bytes per device
    of stage *s* by label. ``bucket_bytes``: the data-parallel gradient bucket (reduction
    overlapped with the last micro-batch's backward, Megatron ``overlap_grad_reduce``); None
    takes Megatron-core's default, ``max(40e6, 1e6 x dp)`` parameters
    (``DistributedDataParallelConfig.bucket_size``) of gradients in the training precision.
    ``fold``: simulate one rank per pipeline stage and account the other ranks' identical
    traffic on the links (symmetry folding; see :mod:`hwsim.jobs.parallel`).
    ``offload``: ``"none"``, or where the optimizer states and fp32 master weights live
    (ZeRO-Offload ``"cpu"``: host memory; ZeRO-Infinity ``"nvme"``: the server's local drive,
    staged through host memory); the optimizer step then runs on the host CPU.
    ``offload_params`` (ZeRO-Infinity, with ``zero=3``): each rank's parameter shards live there
    too and are copied to the device before every all-gather of a block.
    ``host_nodes[r]``: (host memory, CPU, local storage or None) of device *r*'s server.
    ``data``: the input pipeline (:class:`~hwsim.jobs.inputs.DataPlan`) of the first stage's
    tensor rank 0 of every lane, which reads each micro-batch before its forward pass (None:
    batches are ready in host memory). Not with ``fold``. ``checkpoint``: periodic checkpoints
    (:mod:`hwsim.jobs.checkpoint`), one shard per global rank, written by every rank also when
    folded. ``stack``: the software stack (:class:`~hwsim.catalog.stacks.StackProfile`) applied to
    every device (:meth:`~hwsim.jobs.system.Device.running`); None: the catalog figures.
    ``steady_state``: simulate each step's pipeline until its steady phase repeats and advance
    the rest exactly (:mod:`hwsim.jobs.steady`); only :func:`hwsim.simulation.simulate` runs a
    plan that way (it re-runs the whole step if the pattern does not repeat).
    ``closed_form``: a collective that shares its links takes its closed-form time while they
    carry no other flow (:func:`~hwsim.jobs.phases.run_collective`); False: flows throughout.
    """

    job: str
    stages: tuple[tuple[ModelOps, ...], ...]
    devices: tuple[str, ...]
    tp: int
    pp: int
    dp: int
    micro_batches: int
    p2p_bytes: float
    memory: tuple[dict[str, float], ...]
    schedule: str = "1f1b"
    virtual_stages: int = 1
    precision: str = "bf16"
    optimizer: str = "adam"
    steps: int = 1
    total_steps: int | None = None
    zero: int = 0
    ep: int = 1
    cp: int = 1
    collective: str = "auto"
    bucket_bytes: float | None = None
    fold: bool = False
    offload: str = "none"
    host_nodes: tuple[tuple[str, str, str | None], ...] = ()
    offload_params: bool = False
    data: DataPlan | None = None
    checkpoint: CheckpointPlan | None = None
    stack: Any = None
    steady_state: bool = False
    closed_form: bool = True

    def __post_init__(self) -> None:
        for key in ("tp", "pp", "dp", "micro_batches", "virtual_stages", "steps", "ep", "cp"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key}={v!r} must be a positive integer")
        if len(self.devices) != self.tp * self.cp * self.pp * self.dp:
            raise ValueError(f"{len(self.devices)} devices for tp={self.tp} x cp={self.cp} x "
                             f"pp={self.pp} x dp={self.dp} = "
                             f"{self.tp * self.cp * self.pp * self.dp} ranks")
        if len(self.stages) != self.pp or any(len(c) != self.virtual_stages for c in self.stages):
            raise ValueError(f"stages must be {self.pp} stages of {self.virtual_stages} chunks")
        if len(self.memory) != self.pp:
            raise ValueError(f"memory must hold one breakdown per stage ({self.pp})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown pipeline schedule {self.schedule!r}; valid: "
                             f"{', '.join(SCHEDULES)}")
        if self.virtual_stages > 1 and self.schedule != "interleaved":
            raise ValueError(f"virtual_stages={self.virtual_stages} needs schedule "
                             f"'interleaved', not {self.schedule!r}")
        if self.zero not in IMPLEMENTED_ZERO:
            raise ValueError(f"zero={self.zero!r} is not a ZeRO stage ParallelTrainingJob "
                             f"implements; implemented: {', '.join(map(str, IMPLEMENTED_ZERO))}")
        if self.offload not in OFFLOAD:
            raise ValueError(f"offload={self.offload!r}; valid: {', '.join(OFFLOAD)}")
        if (self.offload != "none" or self.data) and len(self.host_nodes) != len(self.devices):
            raise ValueError("offload and data need host_nodes: (host memory, cpu, storage) "
                             "per device")
        if self.data is not None and self.fold:
            raise ValueError("an input pipeline (data) is not folded: its reads share the "
                             "dataset's tier; use fold=False")
        if self.offload_params and (self.zero != 3 or self.offload == "none"):
            raise ValueError("offload_params needs zero=3 and offload 'cpu' or 'nvme' (the "
                             "parameter shards live where the optimizer states do)")
        if self.offload == "nvme" and any(n[2] is None for n in self.host_nodes):
            raise ValueError("offload='nvme' needs a local storage tier on every server")
        if self.dp % self.ep:
            raise ValueError(f"ep={self.ep} must divide dp={self.dp} (expert parallelism splits "
                             "the data-parallel ranks)")
        for chunks in self.stages:
            for m in chunks:
                for op in m.forward + m.backward:
                    if op.comm and op.comm not in COMMS:
                        raise ValueError(f"op {op.name!r} needs a {op.comm!r} collective, which "
                                         "ParallelTrainingJob does not implement (only "
                                         f"{', '.join(COMMS)})")

    @property
    def bucket(self) -> float:
        """Bytes of one data-parallel gradient bucket (see ``bucket_bytes``)."""
        if self.bucket_bytes is not None:
            return self.bucket_bytes
        if not getattr(self.stack, "grad_reduce_overlap", True):
            return math.inf  # one reduction after the backward (the stack does not overlap it)
        return max(40e6, 1e6 * self.dp) * storage_bytes(self.precision)

    @property
    def lanes(self) -> int:
        """Data-parallel x context-parallel ranks per (stage, TP index): ``dp * cp``."""
        return self.dp * self.cp

    def rank(self, stage: int, lane: int, tp_idx: int) -> int:
        """Global rank of (pipeline stage, lane = dp index x cp + cp index, tensor index)."""
        return (stage * self.lanes + lane) * self.tp + tp_idx

    def device(self, stage: int, lane: int, tp_idx: int) -> str:
        return self.devices[self.rank(stage, lane, tp_idx)]

    def stage_model(self, stage: int) -> ModelOps:
        """All chunks of *stage* as one model (what its devices hold)."""
        chunks = self.stages[stage]
        blocks = [b for c in chunks for b in c.blocks]
        if not blocks:
            return chunks[0]
        return model_from_blocks(chunks[0].name, blocks, samples=chunks[0].samples,
                                 tokens_per_sample=chunks[0].tokens_per_sample,
                                 extra=chunks[0].extra)


def parallel_plan(job: str, model: ModelOps, devices: Sequence[str], *, tp: int, pp: int,
                  dp: int | None = None, micro_batches: int = 1, schedule: str = "1f1b",
                  virtual_stages: int = 1, precision: str = "bf16", optimizer: str = "adam",
                  steps: int = 1, zero: int = 0, ep: int = 1, cp: int = 1,
                  p2p_bytes: float | None = None, collective: str = "auto",
                  workspace_bytes: float = 0.0, fold: bool = False, offload: str = "none",
                  host_nodes: Sequence[tuple[str, str, str | None]] = (),
                  data: DataPlan | None = None, offload_params: bool = False,
                  overheads: dict[str, float] | None = None) -> ParallelPlan:
    """A :class:`ParallelPlan` from *model*, the ops of one micro-batch on one TP rank (e.g.
    :func:`~hwsim.workloads.transformer_ops` with the same ``tp``, ``cp``, ``ep``), split by
    :func:`~hwsim.workloads.pipeline_stages`. ``dp`` defaults to
    ``len(devices) / (tp*cp*pp)``. ``p2p_bytes`` defaults to ``micro_batch * seq * hidden *
    value_bytes / (tp * cp)`` (Megatron scatters the boundary tensor over the TP ranks, or it is
    already split by sequence parallelism; each CP rank holds its share of the sequence).
    Memory per stage: :func:`~hwsim.workloads.training_memory`, ZeRO sharding over
    ``dp * cp`` (Megatron's distributed optimizer shards over the data-parallel group with
    context parallelism); with ``offload`` the optimizer states leave device memory.
    ``overheads``: the software stack's memory terms, passed to ``training_memory``
    (``grad_bytes``, ``context_bytes``, ``comm_buffer_bytes``:
    :meth:`~hwsim.catalog.stacks.StackProfile.memory_overheads`)."""
    devices = tuple(devices)
    built = model.extra.get("degrees", {})
    wrong = [f"{k}={built[k]}" for k, v in (("tp", tp), ("cp", cp), ("ep", ep))
             if k in built and built[k] != v]
    if wrong:
        raise ValueError(f"the ops of {model.name!r} were built for {', '.join(wrong)}, the plan "
                         f"has tp={tp}, cp={cp}, ep={ep}; build them with the plan's degrees")
    if dp is None:
        if tp < 1 or pp < 1 or cp < 1 or len(devices) % (tp * cp * pp):
            raise ValueError(f"{len(devices)} devices are not a multiple of tp={tp} x cp={cp} "
                             f"x pp={pp}")
        dp = len(devices) // (tp * cp * pp)
    stages = pipeline_stages(model, pp, virtual_stages)
    if p2p_bytes is None and pp == 1:
        p2p_bytes = 0.0  # no stage boundary
    if p2p_bytes is None:
        spec = model.extra.get("spec")
        if spec is None or not hasattr(spec, "hidden"):
            raise ValueError(f"model {model.name!r} has no hidden size: pass p2p_bytes")
        p2p_bytes = (model.samples * model.tokens_per_sample * spec.hidden
                     * storage_bytes(precision) / (tp * cp))
    memory = []
    for s, chunks in enumerate(stages):
        blocks = [b for c in chunks for b in c.blocks]
        whole = model_from_blocks(model.name, blocks, samples=model.samples,
                                  tokens_per_sample=model.tokens_per_sample, extra=model.extra)
        if "expert_params" in model.extra:  # the stage's share of the experts
            share = sum(b.params for b in blocks) / max(model.params, 1.0)
            whole.extra["expert_params"] = model.extra["expert_params"] * share
        memory.append(training_memory(whole, precision=precision, optimizer=optimizer,
                                      dp=dp * cp,
                                      zero=zero, ep=ep, pp=pp, stage=s, schedule=schedule,
                                      micro_batches=micro_batches,
                                      virtual_stages=virtual_stages,
                                      workspace_bytes=workspace_bytes,
                                      **(overheads or {})))
        if offload != "none":
            memory[-1]["optimizer_states"] = 0.0  # in host memory or on the drive
        if offload_params:
            memory[-1]["weights"] = 0.0  # shards fetched per block (zero3_buffers hold them)
    return ParallelPlan(job=job, stages=tuple(tuple(c) for c in stages), devices=devices, tp=tp,
                        pp=pp, dp=dp, micro_batches=micro_batches, p2p_bytes=float(p2p_bytes),
                        memory=tuple(memory), schedule=schedule, virtual_stages=virtual_stages,
                        precision=precision, optimizer=optimizer, steps=steps, zero=zero, ep=ep,
                        cp=cp, collective=collective, fold=fold, offload=offload,
                        host_nodes=tuple(host_nodes), data=data, offload_params=offload_params)


def device_kinds(graph, devices) -> list[str]:
    """The distinct (catalog id, speed) of *devices* on *graph*, as ``"A100-SXM4-80GB"`` or
    ``"A100-SXM4-80GB at speed 0.5"``: symmetry folding needs exactly one."""
    kinds = {}
    for d in devices:
        at = graph.nodes[d]
        speed = at.get("speed", 1.0)
        kinds.setdefault((at.get("spec"), speed),
                         str(at.get("spec")) + (f" at speed {speed:g}" if speed != 1 else ""))
    return list(kinds.values())
