"""The parallelism search's analytic step time (:func:`estimate_step_time`): orders candidate
layouts before any is simulated (docs/planning.md, "Parallelism search", step 2).

It follows the simulated jobs' schedule in closed form: the most loaded pipeline stage's
micro-batches at the device's op times (as the job's software stack runs them), the pipeline
bubble, the stage-boundary sends, and the data-parallel gradient reduction overlapped with the
last micro-batch's backward in buckets as the jobs do (:mod:`hwsim.jobs.training`, PyTorch DDP;
:mod:`hwsim.jobs.parallel`, Megatron-LM ``overlap_grad_reduce``): only the part of the
reduction still running when the backward ends is on the step's path. Congestion (flows sharing
links) and the collectives' latency are left out: an ordering heuristic, not a bound.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import networkx as nx

from hwsim.catalog import get_device
from hwsim.topology.nvl import scale_up
from hwsim.workloads.memory import storage_bytes

__all__ = ["estimate_step_time", "exposed_reduction", "per_server", "server_bandwidths"]


def per_server(g: nx.Graph, devices: list[str]) -> int:
    """Devices per server, or per NVLink domain where servers share one (the smallest's count):
    what NCCL treats as one node (:func:`hwsim.topology.nvl.scale_up`)."""
    counts: dict[tuple, int] = {}
    for d in devices:
        key = scale_up(g.nodes[d])
        counts[key] = counts.get(key, 0) + 1
    return min(counts.values())


def server_bandwidths(g: nx.Graph, device: str) -> tuple[float, float]:
    """(inside a server, across servers) achievable bytes/s per device: the device's fastest
    link, and its server's links out of the server shared by the server's devices. A server in
    an NVLink domain counts as the whole domain (its switch inside, its NICs out)."""
    at = g.nodes[device]
    server = scale_up(at)

    def bw(a: Mapping[str, Any]) -> float:
        return a.get("bw_bytes_per_s", 0.0) * a.get("efficiency", 1.0) * a.get("count", 1)

    intra = max((bw(a) for _, _, a in g.edges(device, data=True)), default=0.0)
    kind = at.get("kind")
    local = [x for x, a in g.nodes(data=True) if scale_up(a) == server]
    here = set(local)
    out = sum(bw(a) for x in local for _, y, a in g.edges(x, data=True) if y not in here
              and g.nodes[y].get("server") is None)
    n_dev = sum(1 for x in local if g.nodes[x].get("kind") == kind)
    inter = out / n_dev if out > 0 else intra
    return intra, min(intra, inter) if intra > 0 else inter


def exposed_reduction(backwards: Iterable[Iterable[tuple[float, float]]], bucket: float,
                      s_per_byte: float) -> float:
    """Seconds of a bucketed gradient reduction left after the backward that produces it ends.

    *backwards*: per model chunk, in the order their last backwards run, the ``(seconds,
    gradient bytes)`` of each backward op. As the jobs do, gradients collect in a bucket; a
    bucket that reaches *bucket* bytes (and each chunk's remainder, at the chunk's end) starts
    its reduction when the op that filled it ends, on the one communication stream (after the
    previous bucket's), taking ``bytes x s_per_byte``. Returns ``max(0, end of the last
    reduction - end of the backward)``: 0 when every bucket but a small last one hides behind
    the remaining backward, the whole reduction time when the backward is negligible. The
    chunks' last backwards are taken back to back (in an interleaved schedule other units run
    between them, which hide more; the estimate is the pessimistic side)."""
    t = free = 0.0
    for ops in backwards:
        fill = 0.0
        for seconds, grad in ops:
            t += seconds
            fill += grad
            if grad > 0 and fill >= bucket:
                free = max(free, t) + fill * s_per_byte
                fill = 0.0
        if fill > 0:
            free = max(free, t) + fill * s_per_byte
    return max(0.0, free - t)


def estimate_step_time(plan, g: nx.Graph) -> float:
    """An analytic step time (seconds) of a training plan, for ordering candidates before
    simulating them: ``(m + (pp - 1) / v) x T_mb + m x T_p2p + T_grad + T_opt``.

    ``T_mb`` is the most loaded stage's forward and backward of one micro-batch: each compute
    op at the device's op time as the job's stack runs it, at the op's own precision where an
    FP8 recipe sets one (:meth:`~hwsim.catalog.specs.DeviceSpec.op_time_s`), each blocking (not ``comm_async``)
    collective at the ring volume (all-reduce ``2(k-1)/k``, all-gather, reduce-scatter and
    all-to-all ``(k-1)/k`` of the buffer) over the device's server link when the group fits in a
    server, else its share of the server's network links. ``T_p2p``: the stage-boundary sends of
    a micro-batch (both directions, once per chunk).

    ``T_grad``: the part of the gradient reduction over ``dp x cp`` that the last micro-batch's
    backward does not hide (:func:`exposed_reduction`, buckets of the plan's size as the jobs
    reduce them): an all-reduce (``2(k-1)/k``), or under ZeRO-1/2 a reduce-scatter (``(k-1)/k``)
    plus, after the optimizer, the exposed all-gather of the stage's parameters (``(k-1)/k``).
    ZeRO-3 counts one reduce-scatter and one all-gather of the stage's parameters fully exposed
    (its per-block gathers each micro-batch are not modelled). ``T_opt``: the optimizer ops, on
    a ``1/(dp x cp)`` shard under ZeRO as the job runs them. Congestion and latency are
    ignored."""
    parallel = getattr(plan, "stages", None) is not None
    devices = list(plan.devices if parallel else plan.ranks)
    spec = get_device(g.nodes[devices[0]]["spec"])
    if getattr(plan, "stack", None) is not None:
        spec = plan.stack.apply(spec)
    gpn = per_server(g, devices)
    intra, inter = server_bandwidths(g, devices[0])
    prec = plan.precision
    tp = plan.tp if parallel else 1
    cp = plan.cp if parallel else 1
    ep = plan.ep if parallel else 1
    dp = plan.dp if parallel else len(devices)
    zero = plan.zero if parallel else 0
    groups = {"tp": (tp, 1), "cp": (cp, tp), "ep": (ep, tp * cp), "mp": (tp, 1)}

    def comm_time(op) -> float:
        size, stride = groups[op.comm.split("_")[0]]
        if size <= 1:
            return 0.0
        factor = 2.0 if op.comm.endswith("allreduce") else 1.0
        link = intra if size * stride <= gpn else inter
        return factor * (size - 1) / size * op.comm_bytes / link

    times: dict[tuple, float] = {}  # by what the time depends on: the layers repeat their ops

    def op_time(op) -> float:
        key = (op.comm, op.comm_async, op.comm_bytes, op.flops, op.bytes, op.dtype, op.shape)
        t = times.get(key)
        if t is None:
            t = times[key] = (0.0 if op.comm_async else comm_time(op)) if op.comm else (
                spec.op_time_s(op.flops, op.bytes, op.dtype or prec, shape=op.shape))
        return t

    def ops_time(ops) -> float:
        return sum(op_time(op) for op in ops)

    stages = [list(st) for st in plan.stages] if parallel else [[plan.model]]
    per_stage = [sum(ops_time(c.forward) + ops_time(c.backward) for c in st) for st in stages]
    heaviest = max(range(len(stages)), key=lambda i: per_stage[i])
    chunks = stages[heaviest]
    t_mb = per_stage[heaviest]
    m = plan.micro_batches
    pp = plan.pp if parallel else 1
    v = plan.virtual_stages if parallel else 1
    t = (m + (pp - 1) / v) * t_mb
    if pp > 1:
        link = intra if dp * cp * tp < gpn else inter
        t += m * 2 * v * plan.p2p_bytes / link
    lanes = dp * cp
    shard = lanes if zero else 1
    if lanes > 1:
        link = intra if lanes * tp <= gpn else inter
        ring = (lanes - 1) / lanes / link  # seconds per byte of a reduce-scatter or all-gather
        params_bytes = sum(c.params for c in chunks) * storage_bytes(prec)
        if zero == 3:
            t += 2.0 * ring * params_bytes
        else:
            bucket = plan.bucket if parallel else plan.bucket_bytes
            last_backwards = [[(op_time(op), op.grad_bytes) for op in c.backward]
                              for c in reversed(chunks)]
            t += exposed_reduction(last_backwards, bucket, (1.0 if zero else 2.0) * ring)
            if zero:
                t += ring * params_bytes  # the updated parameters' all-gather
    t += sum(spec.op_time_s(op.flops / shard, op.bytes / shard, op.dtype or prec)
             for c in chunks for op in c.optimizer)
    return t
