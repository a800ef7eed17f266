"""From a validated :class:`~hwsim.scenario.schema.Scenario` to a run: the topology graph, the
job plan, and :func:`hwsim.simulation.simulate`. Every reference that the schema cannot check
alone (node ids, storage names, divisibility of the batch) is checked here, with the field path
in the error."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import networkx as nx

from hwsim.catalog import get_device, load_catalog
from hwsim.catalog.fp4 import fp4_training_error, nvfp4_devices
from hwsim.catalog.stacks import StackProfile, load_stacks
from hwsim.exceptions import ScenarioError
from hwsim.heap import frozen_heap
from hwsim.jobs.checkpoint import CheckpointPlan, checkpoint_shards
from hwsim.jobs.dataloader import DataLoaderPlan
from hwsim.jobs.parallel_plan import ParallelPlan, device_kinds, parallel_plan
from hwsim.jobs.inputs import DataPlan
from hwsim.jobs.training import TrainingPlan
from hwsim.jobs.transfer import TransferPlan
from hwsim.scenario.budget import check_budget
from hwsim.scenario.build_power import apply_power
from hwsim.scenario.calibration import apply as apply_calibration
from hwsim.scenario.calibration import STACK_PROFILES, read_calibration
from hwsim.scenario.schema_cluster import INT_MAX
from hwsim.scenario.schema import (Cluster, DataLoaderWorkload, Failures, InferenceWorkload,
                                   Scenario, TrainingWorkload, TransferWorkload)
from hwsim.topology import cluster as build_cluster
from hwsim.topology import (compute_devices, degrade, from_explicit, multi_site, nodes_of_kind,
                            server_index, server_peer, torus_ordered)
from hwsim.topology import attributes as A
from hwsim.workloads import TransformerSpec, model_ops, resolve_model, training_memory
from hwsim.workloads.memory import state_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from hwsim.analysis.result import Result
    from hwsim.jobs.resilience import FailureSpec

__all__ = ["build_graph", "training_plan", "job_stack", "transfer_plans", "dataloader_plan", "failure_spec",
           "prepare", "scenario_graph", "run_scenario", "SIMULATED_STEPS"]

SIMULATED_STEPS = 20
"""Steps simulated when a budget (epochs, samples, tokens) asks for more (a few more with an
input pipeline, :func:`simulated_steps`): the rest are extrapolated from the steady-state step
time (``time_to_train_s``)."""

def build_graph(c: Cluster) -> nx.Graph:
    """The topology graph of a cluster section (builder, multi-site or explicit form), with its
    stragglers and degraded links marked (:func:`hwsim.topology.degrade`). Builder errors are
    reported under the cluster section's field path."""
    try:
        g = _build_graph(c)
    except ScenarioError as err:
        if err.field and err.field.startswith("cluster"):
            raise
        base = "cluster.graph" if c.graph is not None else "cluster"
        field = f"{base}.{err.field}" if err.field else base
        raise ScenarioError(err.reason, field=field) from err
    try:
        return degrade(g, [x.model_dump() for x in c.stragglers],
                       [x.model_dump() for x in c.degraded_links])
    except ScenarioError as err:
        raise ScenarioError(err.reason, field=f"cluster.{err.field}") from err


def _build_graph(c: Cluster) -> nx.Graph:
    if c.graph is not None:
        return from_explicit(
            nodes=[n.model_dump() for n in c.graph.nodes],
            links=[ln.model_dump() for ln in c.graph.links])
    if c.sites is not None:
        sites = {}
        for i, s in enumerate(c.sites):
            try:
                sites[s.name] = _cluster_graph(s)
            except ScenarioError as err:
                raise A.nest_error(err, f"sites[{i}]") from None
        return multi_site(sites, [w.model_dump() for w in c.wan or []])
    return _cluster_graph(c)


def _cluster_graph(part) -> nx.Graph:
    """A builder-form cluster (or one site): ``nodes`` x ``node``, or ``groups``."""
    from hwsim.scenario.schema import Fabric

    if part.groups is not None:
        shape = dict(groups=[g.model_dump() for g in part.groups])
    else:
        shape = dict(nodes=part.nodes or 1, node=part.node.model_dump())
    return build_cluster(**shape, fabric=(part.fabric or Fabric()).model_dump(exclude_none=True),
                         storage=[s.model_dump() for s in part.storage])


FOLD_ABOVE = 16
"""``fold: auto`` folds 3D-parallel jobs of more devices than this (DESIGN.md, scale by
symmetry; folded and unfolded 64-GPU runs agree within 1%, tests/test_folding.py); jobs of up
to two 8-GPU servers are simulated rank by rank, so their traces show every rank, and so are
jobs whose devices differ (mixed groups, stragglers:
:func:`~hwsim.jobs.parallel_plan.device_kinds`)."""


def job_stack(w: TrainingWorkload, spec: Any, g: nx.Graph | None = None) -> StackProfile:
    """The software stack a training workload runs: ``workload.stack``, else the default for its
    model's kind (``default:`` of ``hwsim/catalog/data/stacks.yaml``: transformers and others);
    with the constants of the run's calibration where graph *g* carries them
    (:data:`~hwsim.scenario.calibration.STACK_PROFILES`)."""
    stacks = load_stacks()
    stack = (stacks.get(w.stack) if w.stack is not None
             else stacks.default_for(isinstance(spec, TransformerSpec)))
    if g is not None:
        stack = g.graph.get(STACK_PROFILES, {}).get(stack.name, stack)
    return stack


def training_plan(s: Scenario, g: nx.Graph, devices: list[str] | None = None,
                  job: str = "train", *, cache: dict | None = None) -> TrainingPlan | ParallelPlan:
    """The job plan of a training workload: data parallel (:class:`TrainingPlan`, with the input
    pipeline) or, with tensor/pipeline parallelism or ZeRO, a :class:`ParallelPlan`. It runs on
    *devices* (default: all of the cluster's, :func:`~hwsim.topology.compute_devices`) and tags
    its events *job*.

    *cache*: a dict the caller keeps while it plans many variants of one scenario on the same
    graph *g*, which it does not change meanwhile (the parallelism search): what depends only
    on the graph (the devices, the server index, the device kinds) and the model's ops (by
    every argument of :func:`~hwsim.workloads.model_ops`) are computed once. The plans are
    the same as without it."""
    w = s.workload
    assert isinstance(w, TrainingWorkload)
    par = w.parallelism
    kind = s.compute_device
    memo = cache if cache is not None else {}
    if devices is not None:
        ranks = list(devices)
    else:
        ranks = list(memo.get(("devices", kind)) or memo.setdefault(
            ("devices", kind), tuple(compute_devices(g, kind))))
    index = memo.get("server_index") or memo.setdefault("server_index", server_index(g))
    if not ranks:
        raise ScenarioError(f"the cluster has no {kind} to train on", field="workload.device")
    if par.torus_order is not None:
        try:
            ranks = torus_ordered(g, ranks, par.torus_order)
        except ValueError as err:
            raise ScenarioError(str(err), field="workload.parallelism.torus_order") from None
    tp, pp, cp, ep, n = par.tp, par.pp, par.cp, par.ep, len(ranks)
    dp = par.dp or n // (tp * pp * cp)
    if dp * tp * pp * cp != n:
        whose = "cluster" if devices is None else "job"
        raise ScenarioError(f"tp x cp x pp x dp = {tp} x {cp} x {pp} x {dp} must equal the {n} "
                            f"{kind} devices of the {whose}; valid: dp: {n // (tp * pp * cp) or 1}"
                            f" with tp x cp x pp dividing {n}", field="workload.parallelism")
    if dp % ep:
        raise ScenarioError(f"ep={ep} must divide dp={dp}: expert parallelism splits the "
                            f"data-parallel ranks; valid: ep among the divisors of {dp}",
                            field="workload.parallelism.ep")
    micro = par.micro_batch or w.global_batch // dp
    if micro < 1 or w.global_batch % (dp * micro):
        raise ScenarioError(f"global_batch={w.global_batch} is not a multiple of dp x micro_batch "
                            f"= {dp} x {micro}; valid: a multiple of {dp * micro}",
                            field="workload.global_batch")
    accumulate = w.global_batch // (dp * micro)
    try:
        fields = w.model.model_dump(exclude_none=True)
        flash = fields.pop("flash_attention", None)
        spec = resolve_model(fields)
        stack = job_stack(w, spec, g)
        if w.precision == "fp8" and stack.fp8_recipe is None:
            fp8 = load_stacks().fp8_stacks()
            raise ScenarioError(
                f"precision: fp8 needs a software stack with an FP8 recipe, and stack "
                f"{stack.name!r} has none (fp8_recipe: none in hwsim/catalog/data/stacks.yaml: "
                f"it does not train in FP8){'' if w.stack else ' (the default for this model)'}"
                f"; valid: workload.stack: {', '.join(fp8) or '(no stack has one)'} for "
                f"transformer models, or precision: bf16", field="workload.stack")
        dev = get_device(g.nodes[ranks[0]]["spec"])
        if w.precision == "fp4":
            why = fp4_training_error(stack, dev, load_stacks().fp4_stacks(),
                                     nvfp4_devices(load_catalog().devices))
            if why:
                raise ScenarioError(why, field="workload.precision")
        if flash is None:  # the stack decides; an explicit model.flash_attention overrides it
            flash = stack.fused_attention(dev)
        args = dict(micro_batch=micro, precision=w.precision, seq_len=w.seq_len, tp=tp,
                    sp=par.sequence_parallel, cp=cp, ep=ep, recompute=par.recompute,
                    optimizer=w.optimizer, flash_attention=flash,
                    fp8_recipe=stack.fp8_recipe, tp_overlap=stack.tp_comm_overlap and not (
                        w.precision == "fp4" and not stack.fp4_recipe.tp_comm_overlap),
                    fp4_recipe=stack.fp4_recipe,
                    fp8_transpose=not dev.fp8_any_layout)  # None: TN
        # the FP8 recipe holds a dict: its repr (its every field) stands for it in the key
        ops, key = None, ("ops", spec, *(repr(v) if k in ("fp8_recipe", "fp4_recipe") else v
                                         for k, v in args.items())) if cache is not None else None
        if key is not None:
            try:
                ops = memo.get(key)
            except TypeError:  # an unhashable spec or recipe: not memoized
                key = None
        if ops is None:
            ops = model_ops(spec, **args)
            if key is not None:
                memo[key] = ops
    except ScenarioError:
        raise
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.model") from None
    # the stack's memory overheads: fp32 main gradients, CUDA context, one NCCL communicator per
    # parallelism of degree > 1 (stacks.yaml [NCCL-ENV])
    overheads = stack.memory_overheads(
        w.precision, dev.kind,
        sum(d > 1 for d in (dp, tp, pp, cp, ep)))
    total = _total_steps(w)
    steps = w.steps if w.steps is not None else min(total, simulated_steps(w))
    parallel = (tp > 1 or pp > 1 or cp > 1 or ep > 1 or par.zero or par.virtual_stages > 1
                or par.offload != "none")
    kinds = (device_kinds(g, ranks) if devices is not None else
             memo.get(("kinds", kind)) or memo.setdefault(("kinds", kind), device_kinds(g, ranks)))
    if w.fold is True and parallel and len(kinds) > 1:
        raise ScenarioError(f"fold: true needs identical devices, but the job's are "
                            f"{', '.join(kinds)} (mixed hardware or cluster.stragglers): one "
                            "rank cannot stand for the others; valid: fold: auto (which does "
                            "not fold such a job) or false", field="workload.fold")
    if w.fold is True and not parallel:
        raise ScenarioError("fold: true applies to jobs with tensor or pipeline parallelism or "
                            "ZeRO or context/expert parallelism; a data-parallel-only job is "
                            "simulated rank by rank; valid: "
                            "fold: auto or false", field="workload.fold")
    data = None
    if w.data is not None:
        data = data_plan(s, g, ranks[0], readers=dp * micro)
    if parallel:
        if data is not None and w.fold is True:
            raise ScenarioError("fold: true with an input pipeline: the dataset's reads are not "
                                "folded; valid: fold: auto or false (auto does not fold a job "
                                "with data)", field="workload.fold")
        try:
            nodes = ()
            if par.offload != "none" or data is not None:
                raw = [(server_peer(g, r, "memory", index), server_peer(g, r, "cpu", index),
                        server_peer(g, r, "storage", index)) for r in ranks]
                missing = sorted({k for n in raw for k, v in zip(("memory", "cpu"), n)
                                  if v is None} | ({"storage"} if par.offload == "nvme" and
                                                   any(n[2] is None for n in raw) else set()))
                # without host memory or a CPU, batches land on the device itself (as in the
                # data-parallel job)
                nodes = tuple((m or r, c or r, d) for (m, c, d), r in zip(raw, ranks))
                if missing and par.offload != "none":
                    raise ScenarioError(f"offload: {par.offload} needs host {', '.join(missing)}"
                                        f" on every server of the cluster; valid: a node with "
                                        f"cpu, host_memory" + (" and local_storage" if
                                                              par.offload == "nvme" else ""),
                                        field="workload.parallelism.offload")
            plan = parallel_plan(job, ops, ranks, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep,
                                 offload=par.offload, host_nodes=nodes,
                                 offload_params=par.offload_params,
                                 micro_batches=accumulate, virtual_stages=par.virtual_stages,
                                 schedule="interleaved" if par.virtual_stages > 1 else "1f1b",
                                 precision=w.precision, optimizer=w.optimizer, steps=steps,
                                 zero=par.zero, collective=w.collective.algorithm,
                                 data=data, overheads=overheads, fold=w.fold is True or (
                                     w.fold == "auto" and n > FOLD_ABOVE and data is None
                                     and len(kinds) == 1))
        except ValueError as err:
            raise ScenarioError(str(err), field="workload.parallelism") from None
        return replace(plan, total_steps=total, checkpoint=_checkpoint_plan(s, g, plan),
                       stack=stack, steady_state=w.steady_state,
                       closed_form=w.collective.closed_form)
    needs = sorted({op.comm for op in ops.forward + ops.backward if op.comm})
    if needs:
        raise ScenarioError(f"model {spec.name!r} needs {', '.join(needs)} communication, which "
                            "is not implemented yet", field="workload.model")
    hosts = tuple(server_peer(g, r, "memory", index) or r for r in ranks)
    cpus = tuple(server_peer(g, r, "cpu", index) or r for r in ranks)
    memory = training_memory(ops, precision=w.precision, optimizer=w.optimizer, dp=dp,
                             workspace_bytes=micro * (w.data.sample_bytes if w.data else 0.0),
                             **overheads)
    plan = TrainingPlan(job=job, model=ops, ranks=tuple(ranks), hosts=hosts, cpus=cpus,
                        precision=w.precision, optimizer=w.optimizer, steps=steps,
                        micro_batches=accumulate, total_steps=total, data=data,
                        on_cpu=kind == "cpu", memory=memory,
                        step_overhead_s=w.framework_overhead or 0.0,
                        collective=w.collective.algorithm, stack=stack,
                        closed_form=w.collective.closed_form)
    return replace(plan, checkpoint=_checkpoint_plan(s, g, plan))


def _checkpoint_plan(s: Scenario, g: nx.Graph, plan: TrainingPlan | ParallelPlan
                     ) -> CheckpointPlan | None:
    """The checkpoints of ``workload.checkpoint``: every rank's shard (from its stage's memory
    breakdown; with offloaded optimizer states, from the parameters it updates), staged in its
    server's host memory, on the named tier or its server's local drive."""
    c = s.workload.checkpoint
    if c is None:
        return None
    index = server_index(g)
    field = "workload.checkpoint.storage"
    if c.storage == "local":
        def storage(dev: str) -> str:
            node = server_peer(g, dev, "storage", index)
            if node is None:
                raise ScenarioError(f"'local' but the server of {dev!r} has no local storage",
                                    field=field)
            return node
    else:
        tier = resolve_endpoint(g, c.storage, field)
        if g.nodes[tier].get("kind") != "storage":
            raise ScenarioError(f"{c.storage!r} is a {g.nodes[tier].get('kind')}, not a storage "
                                f"tier; valid: a storage name or 'local'", field=field)

        def storage(dev: str) -> str:
            return tier
    if isinstance(plan, ParallelPlan):
        per_stage = plan.lanes * plan.tp
        stages = [_stage_state(plan, st) for st in range(plan.pp)]
        breakdowns = [stages[r // per_stage] for r in range(len(plan.devices))]
        devices, zero = plan.devices, plan.zero
        replica = lambda r: (r // plan.tp) % plan.lanes  # noqa: E731
    else:
        devices, zero = plan.ranks, 0
        breakdowns = [plan.memory or {}] * len(devices)
        replica = lambda r: r  # noqa: E731
    shards = checkpoint_shards(breakdowns, devices, replica=replica, zero=zero,
                               include_optimizer=c.include_optimizer,
                               host=lambda d: server_peer(g, d, "memory", index) or d,
                               storage=storage)
    hosts = sorted({sh.host for sh in shards if g.nodes[sh.host].get("kind") == "memory"})
    try:
        return CheckpointPlan(shards=shards, every_steps=c.every_steps, mode=c.mode,
                              writer_bw=c.writer_bw, request_bytes=c.request_bytes,
                              host_capacity=tuple((h, g.nodes[h]["capacity_bytes"])
                                                  for h in hosts))
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.checkpoint.mode") from None


def _stage_state(plan: ParallelPlan, stage: int) -> dict[str, float]:
    """Weights and optimizer states of one device of *stage*: its memory breakdown, or, where
    offloading took them out of device memory, the same sharding over ``dp x cp``."""
    if plan.offload == "none":
        return plan.memory[stage]
    params = sum(m.params for m in plan.stages[stage])
    return state_bytes(params, precision=plan.precision, optimizer=plan.optimizer,
                       dp=plan.lanes, zero=plan.zero)


def simulated_steps(w: TrainingWorkload) -> int:
    """Steps simulated for a budget: :data:`SIMULATED_STEPS`, or with an input pipeline of W
    workers per rank the next ``k x W + 1`` (the workers deliver batches in bursts of W, so the
    steady state after the first step then covers whole bursts)."""
    workers = w.data.workers if w.data is not None and w.data.prefetch > 0 else 1
    return -(-(SIMULATED_STEPS - 1) // workers) * workers + 1


def _total_steps(w: TrainingWorkload) -> int:
    """The steps the run's budget (epochs, samples, tokens) asks for; below 2^63, the largest
    count the results (int64 columns, parquet) hold."""
    try:
        total = _budget_steps(w)
    except OverflowError:  # an infinite budget (epochs: .inf)
        total = INT_MAX + 1
    if total > INT_MAX:
        which = next(k for k in ("epochs", "train_samples", "train_tokens", "steps")
                     if getattr(w, k) is not None)
        raise ScenarioError(f"{getattr(w, which):.3g} gives {total:.3g} training steps, beyond "
                            f"the largest count hwsim takes (2^63 - 1 = {INT_MAX}); valid: a "
                            f"smaller {which}", field=f"workload.{which}")
    return total


def _budget_steps(w: TrainingWorkload) -> int:
    if w.epochs is not None:
        return max(1, math.ceil(w.epochs * w.data.samples / w.global_batch))
    if w.train_samples is not None:
        return max(1, math.ceil(w.train_samples / w.global_batch))
    if w.train_tokens is not None:
        if w.seq_len is None:
            raise ScenarioError("train_tokens needs seq_len (tokens per sample)",
                                field="workload.seq_len")
        return max(1, math.ceil(w.train_tokens / (w.global_batch * w.seq_len)))
    return w.steps or 10


def data_plan(s: Scenario, g: nx.Graph, rank: str, readers: int) -> DataPlan:
    """The input pipeline of ``workload.data``; *readers* samples are read per batch over all
    ranks (an epoch is ``samples / readers`` batches per rank)."""
    d = s.workload.data
    return DataPlan(storage=_data_node(s, g, rank), sample_bytes=d.sample_bytes,
                    request_bytes=d.request_bytes, prefetch=d.prefetch,
                    decode_s_per_sample=d.decode_s_per_sample, workers=d.workers,
                    dataset_bytes=d.samples * d.sample_bytes,
                    epoch_batches=d.samples / readers, page_cache=d.page_cache,
                    page_cache_bytes=d.page_cache_bytes)


def _data_node(s: Scenario, g: nx.Graph, rank: str) -> str | None:
    name = s.workload.data.storage
    if name == "memory":
        return None
    if name == "local":
        node = server_peer(g, rank, "storage")
        if node is None:
            raise ScenarioError("'local' but the servers have no local storage",
                                field="workload.data.storage")
        return node
    return resolve_endpoint(g, name, "workload.data.storage")


def resolve_endpoint(g: nx.Graph, name: str, field: str) -> str:
    """A graph node for an endpoint: a node id, a storage entry name (``storage.<name>``), or
    ``site/name`` in a multi-site cluster."""
    candidates = [name, f"storage.{name}"]
    if "/" in name:
        site, rest = name.split("/", 1)
        candidates.append(f"{site}/storage.{rest}")
    for c in candidates:
        if c in g:
            return c
    storage = sorted(n for n, d in g.nodes(data=True) if d.get("kind") == "storage")
    raise ScenarioError(f"unknown endpoint {name!r}; valid: a storage name or node id such as "
                        f"{', '.join(storage[:8]) or 'n0.gpu0'}", field=field)


def dataloader_plan(s: Scenario, g: nx.Graph) -> DataLoaderPlan:
    """The plan of a ``dataloader`` workload: its emulated accelerators run on the cluster's
    first server (its first CPU socket and its host memory)."""
    w = s.workload
    assert isinstance(w, DataLoaderWorkload)
    cpus = nodes_of_kind(g, "cpu")
    if not cpus:
        raise ScenarioError("a dataloader workload runs on a server's CPU; the cluster has none "
                            "(e.g. cluster.node.cpu: EPYC-7742)", field="cluster")
    host = server_peer(g, cpus[0], "memory") or cpus[0]
    return DataLoaderPlan(job="dataloader", accelerators=w.accelerators, batch=w.batch,
                          computation_time_s=w.computation_time, steps=w.steps, host=host,
                          cpu=cpus[0], data=data_plan(s, g, cpus[0],
                                                      readers=w.accelerators * w.batch))


def transfer_plans(s: Scenario, g: nx.Graph) -> list[TransferPlan]:
    w = s.workload
    assert isinstance(w, TransferWorkload)
    plans = []
    for i, t in enumerate(w.transfers):
        src = resolve_endpoint(g, t.src, f"workload.transfers[{i}].src")
        dst = resolve_endpoint(g, t.dst, f"workload.transfers[{i}].dst")
        if src == dst:
            raise ScenarioError(f"src and dst are the same node {src!r}",
                                field=f"workload.transfers[{i}]")
        plans.append(TransferPlan(name=t.name, src=src, dst=dst, size_bytes=t.size,
                                  start_s=t.start, request_bytes=t.request_bytes,
                                  streams=t.streams))
    return plans


def scenario_graph(s: Scenario) -> nx.Graph:
    """The topology graph a run of *s* simulates on: its cluster, with the constants of its
    calibration file applied (docs/calibration.md), then its ``power:`` section
    (:func:`~hwsim.scenario.build_power.apply_power`: a GPU power cap, the rack limit checked)."""
    g = build_graph(s.cluster)
    if s.calibration is not None:  # this run's fitted constants
        apply_calibration(g, read_calibration(s.calibration))
    apply_power(g, s.power)
    return g


def prepare(s: Scenario, adjust: Callable[[nx.Graph], Any] | None = None, *,
            max_events: int | None = None, reuse: dict | None = None) -> tuple[nx.Graph, Any]:
    """The topology graph and job plan of a validated scenario, with every cross-reference
    checked; nothing is simulated (``hwsim validate`` stops here). With ``jobs:``, the plan is
    the list of ``(name, plan, start_s)`` of :func:`~hwsim.scenario.build_jobs.job_plans`.
    *adjust*, when given, is called with the built graph before anything is planned on it (a
    what-if that changes the hardware: :func:`hwsim.planning.sensitivity`). First, before
    anything is built, the size/event budget (:func:`~hwsim.scenario.budget.check_budget`;
    *max_events* overrides the scenario's ``limits.max_events``) refuses a scenario beyond it
    with :class:`~hwsim.exceptions.BudgetError`.

    *reuse*: a dict a caller keeps while it runs many scenarios in one process (a sweep's
    worker): a training workload's graph is then built once per cluster (and calibration file),
    shared by every run on it (:func:`share_graph`: its routes and collectives' memos) and its
    plans made with one cache per graph (:func:`training_plan`); the runs' results are the
    same as without it. At most :data:`REUSED_GRAPHS` graphs are kept, the oldest dropped."""
    check_budget(s, max_events=max_events)
    if (reuse is not None and adjust is None and s.jobs is None
            and isinstance(s.workload, TrainingWorkload)):
        g, cache = _reused_graph(s, reuse)
        return g, training_plan(s, g, cache=cache)
    g = scenario_graph(s)
    if adjust is not None:
        adjust(g)
    if s.jobs is not None:
        from hwsim.scenario.build_jobs import job_plans  # numpy and the serving jobs: on use

        return g, job_plans(s, g)
    if isinstance(s.workload, InferenceWorkload):
        from hwsim.scenario.build_inference import serving_plan

        return g, serving_plan(s, g)
    if isinstance(s.workload, DataLoaderWorkload):
        return g, dataloader_plan(s, g)
    job = training_plan(s, g) if isinstance(s.workload, TrainingWorkload) else transfer_plans(s, g)
    return g, job


REUSED_GRAPHS = 16
"""Graphs :func:`prepare` keeps in a *reuse* dict (a sweep over a few clusters reuses each)."""


def _reused_graph(s: Scenario, reuse: dict) -> tuple[nx.Graph, dict]:
    import json

    key = (json.dumps(s.cluster.model_dump(mode="json"), sort_keys=True), str(s.calibration),
           json.dumps(s.power.model_dump(mode="json"), sort_keys=True))
    graphs = reuse.setdefault("graphs", {})
    hit = graphs.get(key)
    if hit is None:
        while len(graphs) >= REUSED_GRAPHS:
            graphs.pop(next(iter(graphs)))
        g = scenario_graph(s)
        share_graph(g)
        hit = graphs[key] = (g, {})
    return hit


def simulated_micro_batches(schedule: str, p: int, m: int, v: int = 1) -> int:
    """:func:`hwsim.jobs.steady.simulated_micro_batches`, for the layers above the jobs."""
    from hwsim.jobs.steady import simulated_micro_batches as simulated

    return simulated(schedule, p, m, v)


def share_graph(graph: nx.Graph) -> Any:
    """:func:`hwsim.jobs.system.share_graph`, for the layers above the jobs."""
    from hwsim.jobs.system import share_graph as share

    return share(graph)


def failure_spec(f: Failures | None) -> FailureSpec | None:
    """The jobs layer's :class:`FailureSpec` of a ``workload.failures`` section (None: none)."""
    from hwsim.jobs.resilience import FailureSpec, ScriptedFailure  # numpy: on run only

    if f is None:
        return None
    return FailureSpec(
        profile=None if f.profile == "none" else f.profile,
        mtbf_s=f.mtbf.model_dump(exclude_none=True) if f.mtbf else {},
        scripted=tuple(ScriptedFailure(e.at, e.component, e.cause or e.component)
                       for e in f.scripted),
        detect_s=f.detect, reschedule_s=f.reschedule, policy=f.policy, spares=f.spares,
        repair_s=f.repair, checkpoint_every_steps=f.checkpoint_every_steps,
        checkpoint_stall_s=f.checkpoint_stall, restore_s=f.restore)


def run_scenario(s: Scenario, *, config: dict[str, Any] | None = None,
                 adjust: Callable[[nx.Graph], Any] | None = None,
                 max_events: int | None = None, record: str | None = None,
                 spill: Path | None = None,
                 prepared: tuple[nx.Graph, Any] | None = None,
                 reuse: dict | None = None) -> Result:
    """Build and run a validated scenario; returns its :class:`Result` (writes nothing).
    *adjust* changes the built graph first; *max_events* overrides the event budget
    (:func:`prepare`); *record* overrides ``outputs.record`` (``summary`` for a caller that reads
    only the summary: the same summary, less memory). *spill*: a file the run streams its events
    to as it goes, when it keeps them for events.parquet (``hwsim run --out``: in the result's
    staging folder; record ``ops`` or ``full`` and ``outputs.events`` on). *prepared*: the
    ``(graph, plan)`` that :func:`prepare` gives for *s*, when the caller has them (the
    parallelism search builds a cluster's graph once for many layouts, checks the budget and
    plans each): they are run as they are, nothing is built. *reuse*: :func:`prepare`'s."""
    from hwsim.simulation import simulate, simulate_jobs  # pandas and the engine: on run only

    with frozen_heap():  # the modules, catalogs and graph: out of the collector's passes
        g, job = prepared if prepared is not None else prepare(s, adjust, max_events=max_events,
                                                               reuse=reuse)
        config = config if config is not None else s.model_dump(mode="json")
        level = record or s.outputs.record
        keep = dict(record=level,
                    spill=spill if s.outputs.events and level != "summary" else None)
        if s.jobs is not None:
            return simulate_jobs(g, job, name=s.name, seed=s.seed, config=config,
                                 utilization_bin_s=s.outputs.utilization_bin_s, **keep)
        w = s.workload
        return simulate(g, job, name=s.name, seed=s.seed, config=config,
                        utilization_bin_s=s.outputs.utilization_bin_s,
                        failures=failure_spec(w.failures) if isinstance(w, TrainingWorkload)
                        else None, **keep)
