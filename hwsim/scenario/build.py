"""From a validated :class:`~hwsim.scenario.schema.Scenario` to a run: the topology graph, the
job plan, and :func:`hwsim.simulation.simulate`. Every reference that the schema cannot check
alone (node ids, storage names, divisibility of the batch) is checked here, with the field path
in the error."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import networkx as nx

from hwsim.analysis.result import Result
from hwsim.catalog import get_storage
from hwsim.exceptions import ScenarioError
from hwsim.jobs.parallel import ParallelPlan, parallel_plan
from hwsim.jobs.dataloader import DataLoaderPlan
from hwsim.jobs.inputs import DataPlan
from hwsim.jobs.training import TrainingPlan
from hwsim.jobs.transfer import TransferPlan
from hwsim.scenario.build_inference import serving_plan
from hwsim.scenario.schema import (Cluster, DataLoaderWorkload, InferenceWorkload, Scenario,
                                   TrainingWorkload, TransferWorkload)
from hwsim.simulation import simulate
from hwsim.topology import cluster as build_cluster
from hwsim.topology import from_explicit, multi_site, nodes_of_kind, server_index, server_peer
from hwsim.workloads import model_ops, resolve_model, training_memory

__all__ = ["build_graph", "training_plan", "transfer_plans", "dataloader_plan", "prepare",
           "run_scenario",
           "SIMULATED_STEPS"]

SIMULATED_STEPS = 20
"""Steps simulated when a budget (epochs, samples, tokens) asks for more (a few more with an
input pipeline, :func:`simulated_steps`): the rest are extrapolated from the steady-state step
time (``time_to_train_s``)."""

def build_graph(c: Cluster) -> nx.Graph:
    """The topology graph of a cluster section (builder, multi-site or explicit form). Builder
    errors are reported under the cluster section's field path."""
    try:
        return _build_graph(c)
    except ScenarioError as err:
        if err.field and err.field.startswith("cluster"):
            raise
        base = "cluster.graph" if c.graph is not None else "cluster"
        field = f"{base}.{err.field}" if err.field else base
        raise ScenarioError(err.reason, field=field) from err


def _build_graph(c: Cluster) -> nx.Graph:
    if c.graph is not None:
        return from_explicit(
            nodes=[n.model_dump() for n in c.graph.nodes],
            links=[ln.model_dump() for ln in c.graph.links])
    if c.sites is not None:
        sites = {s.name: _cluster_graph(s.nodes, s.node, s.fabric, s.storage) for s in c.sites}
        return multi_site(sites, [w.model_dump() for w in c.wan or []])
    return _cluster_graph(c.nodes or 1, c.node, c.fabric, c.storage)


def _cluster_graph(nodes, node, fabric, storage) -> nx.Graph:
    from hwsim.scenario.schema import Fabric

    return build_cluster(nodes=nodes, node=node.model_dump(),
                         fabric=(fabric or Fabric()).model_dump(exclude_none=True),
                         storage=[s.model_dump() for s in storage])


FOLD_ABOVE = 16
"""``fold: auto`` folds 3D-parallel jobs of more devices than this (DESIGN.md, scale by
symmetry; folded and unfolded 64-GPU runs agree within 1%, tests/test_folding.py); jobs of up
to two 8-GPU servers are simulated rank by rank, so their traces show every rank."""


def training_plan(s: Scenario, g: nx.Graph) -> TrainingPlan | ParallelPlan:
    """The job plan of a training workload: data parallel (:class:`TrainingPlan`, with the input
    pipeline) or, with tensor/pipeline parallelism or ZeRO, a :class:`ParallelPlan`."""
    w = s.workload
    assert isinstance(w, TrainingWorkload)
    par = w.parallelism
    kind = s.compute_device
    ranks = nodes_of_kind(g, kind)
    index = server_index(g)
    if kind == "cpu":  # one training process per server, on its first socket
        ranks = [n for n in ranks if server_peer(g, n, "cpu", index) == n]
    if not ranks:
        raise ScenarioError(f"the cluster has no {kind} to train on", field="workload.device")
    tp, pp, cp, ep, n = par.tp, par.pp, par.cp, par.ep, len(ranks)
    dp = par.dp or n // (tp * pp * cp)
    if dp * tp * pp * cp != n:
        raise ScenarioError(f"tp x cp x pp x dp = {tp} x {cp} x {pp} x {dp} must equal the {n} "
                            f"{kind} devices of the cluster; valid: dp: {n // (tp * pp * cp) or 1}"
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
        flash = fields.pop("flash_attention", True)
        spec = resolve_model(fields)
        ops = model_ops(spec, micro_batch=micro, precision=w.precision, seq_len=w.seq_len, tp=tp,
                        sp=par.sequence_parallel, cp=cp, ep=ep, recompute=par.recompute,
                        optimizer=w.optimizer, flash_attention=flash)
    except ValueError as err:
        raise ScenarioError(str(err), field="workload.model") from None
    total = _total_steps(w)
    steps = w.steps if w.steps is not None else min(total, simulated_steps(w))
    parallel = (tp > 1 or pp > 1 or cp > 1 or ep > 1 or par.zero or par.virtual_stages > 1
                or par.offload != "none")
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
            plan = parallel_plan("train", ops, ranks, tp=tp, pp=pp, dp=dp, cp=cp, ep=ep,
                                 offload=par.offload, host_nodes=nodes,
                                 offload_params=par.offload_params,
                                 micro_batches=accumulate, virtual_stages=par.virtual_stages,
                                 schedule="interleaved" if par.virtual_stages > 1 else "1f1b",
                                 precision=w.precision, optimizer=w.optimizer, steps=steps,
                                 zero=par.zero, collective=w.collective.algorithm,
                                 data=data, fold=w.fold is True or (
                                     w.fold == "auto" and n > FOLD_ABOVE and data is None))
        except ValueError as err:
            raise ScenarioError(str(err), field="workload.parallelism") from None
        return replace(plan, total_steps=total)
    needs = sorted({op.comm for op in ops.forward + ops.backward if op.comm})
    if needs:
        raise ScenarioError(f"model {spec.name!r} needs {', '.join(needs)} communication, which "
                            "is not implemented yet", field="workload.model")
    hosts = tuple(server_peer(g, r, "memory", index) or r for r in ranks)
    cpus = tuple(server_peer(g, r, "cpu", index) or r for r in ranks)
    memory = training_memory(ops, precision=w.precision, optimizer=w.optimizer, dp=dp,
                             workspace_bytes=micro * (w.data.sample_bytes if w.data else 0.0))
    return TrainingPlan(job="train", model=ops, ranks=tuple(ranks), hosts=hosts, cpus=cpus,
                        precision=w.precision, optimizer=w.optimizer, steps=steps,
                        micro_batches=accumulate, total_steps=total, data=data,
                        on_cpu=kind == "cpu", memory=memory,
                        step_overhead_s=w.framework_overhead or 0.0,
                        collective=w.collective.algorithm)


def simulated_steps(w: TrainingWorkload) -> int:
    """Steps simulated for a budget: :data:`SIMULATED_STEPS`, or with an input pipeline of W
    workers per rank the next ``k x W + 1`` (the workers deliver batches in bursts of W, so the
    steady state after the first step then covers whole bursts)."""
    workers = w.data.workers if w.data is not None and w.data.prefetch > 0 else 1
    return -(-(SIMULATED_STEPS - 1) // workers) * workers + 1


def _total_steps(w: TrainingWorkload) -> int:
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
                    epoch_batches=d.samples / readers, page_cache=d.page_cache)


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


def prepare(s: Scenario) -> tuple[nx.Graph, TrainingPlan | ParallelPlan | DataLoaderPlan
                                  | list[TransferPlan]]:
    """The topology graph and job plan of a validated scenario, with every cross-reference
    checked; nothing is simulated (``hwsim validate`` stops here)."""
    g = build_graph(s.cluster)
    if isinstance(s.workload, InferenceWorkload):
        return g, serving_plan(s, g)
    if isinstance(s.workload, DataLoaderWorkload):
        return g, dataloader_plan(s, g)
    job = training_plan(s, g) if isinstance(s.workload, TrainingWorkload) else transfer_plans(s, g)
    return g, job


def run_scenario(s: Scenario, *, config: dict[str, Any] | None = None) -> Result:
    """Build and run a validated scenario; returns its :class:`Result` (writes nothing)."""
    g, job = prepare(s)
    result = simulate(g, job, name=s.name, seed=s.seed,
                      config=config if config is not None else s.model_dump(mode="json"),
                      utilization_bin_s=s.outputs.utilization_bin_s)
    if isinstance(job, (TrainingPlan, ParallelPlan)):
        _cached_epochs(g, job, result.summary, s.seed)
    return result


def _cached_epochs(g: nx.Graph, job: TrainingPlan | ParallelPlan, summary: dict,
                   seed: int) -> None:
    """Extrapolate ``time_to_train_s`` over the epochs the simulated steps did not reach, with
    the page cache: epoch *e* finds ``h = min(M / D, 1 - (1 - 1/S)^e)`` of the dataset (D bytes)
    in the host memory (M bytes) of each of the S servers that read it
    (:class:`~hwsim.jobs.system.PageCache`), and a step of it takes ``max(t_cached, t * (1 -
    h))``: t the simulated (first-epoch) step, t_cached that of a re-run with the data in host
    memory. Sets ``cached_step_time_s``; nothing changes when the simulated steps already span
    an epoch, the job has no storage to read, or nothing is left to extrapolate."""
    d = job.data
    total, sim, t = job.total_steps or job.steps, job.steps, summary.get("step_time_s")
    if d is None or d.storage is None or not d.page_cache or not d.epoch_batches or t is None:
        return
    per_epoch = d.epoch_batches / job.micro_batches
    if total <= sim or sim > per_epoch or total <= per_epoch:
        return
    hosts = set(job.hosts) if isinstance(job, TrainingPlan) else {n[0] for n in job.host_nodes}
    node = g.nodes[next(iter(hosts))]
    memory = (get_storage(node["spec"]).capacity_bytes * node.get("count", 1)
              if node.get("kind") == "memory" else 0.0)
    fits = min(1.0, memory / d.dataset_bytes) if d.dataset_bytes > 0 else 0.0
    cached = simulate(g, replace(job, data=replace(d, storage=None)), name="page-cache",
                      seed=seed).summary.get("step_time_s") or t
    time, step, e = summary["time_to_train_s"] - (total - sim) * t, sim, 0
    while step < total:
        e = int(step // per_epoch)
        n = min(total, math.floor((e + 1) * per_epoch) or step + 1) - step
        hit = min(fits, 1.0 - (1.0 - 1.0 / len(hosts)) ** e)
        time += max(n, 1) * max(cached, t * (1.0 - hit))
        step += max(n, 1)
    summary["time_to_train_s"] = time
    summary["cached_step_time_s"] = cached
