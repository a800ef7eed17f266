"""Evaluating the layouts of a parallelism search (docs/planning.md, "Parallelism search"): each
layout's plan, memory and analytic estimate (:meth:`Evaluator.assess`), and the simulation of
those that fit (:meth:`Evaluator.simulate`), in this process or in worker processes
(:func:`assess_all`, :func:`simulate_all`).

An :class:`Evaluator` holds what every layout of one base scenario shares, built once per
process: the cluster's graph (calibrated as a run's), its router (shared by every simulation on
that graph: :func:`~hwsim.jobs.system.share_graph`), and the plan cache of
:func:`~hwsim.scenario.build.training_plan` (the devices, the server index and the model's ops
per micro-batch, tp, recompute, ...). A simulated layout is :func:`~hwsim.scenario.build.run_scenario`
of the scenario with that layout, given the graph and the plan already built: the same run as
``hwsim.run`` of that scenario, so the same summary.

Worker processes each build their own :class:`Evaluator` once (the pool's initializer) and are
given layouts, not scenarios or plans: what crosses between processes is a layout's dict and a
row of results. The simulations are handed out longest first (:func:`simulation_cost`), one at
a time, so that no worker is left with a long one at the end while the other idles.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Mapping, Sequence

from hwsim.analysis.parallelism import PARTS, summary_key
from hwsim.catalog import get_device
from hwsim.exceptions import ScenarioError
from hwsim.planning.estimate import estimate_step_time, per_server
from hwsim.planning.search_space import with_layout

__all__ = ["Evaluator", "RESULT_KEYS", "BREAKDOWN_KEYS", "plan_memory", "simulation_cost",
           "assess_all", "simulate_all"]

RESULT_KEYS = ("step_time_s", "tokens_per_s", "samples_per_s", "model_tflops_per_gpu",
               "hardware_tflops_per_gpu", "mfu", "bottleneck")
BREAKDOWN_KEYS = tuple(summary_key(p) for p in PARTS)
SIMULATED_KEYS = ("fits", "memory_per_device_gb") + RESULT_KEYS + BREAKDOWN_KEYS + (
    "micro_batches_simulated",)
"""What a simulation gives back to the search's frame (plus ``simulation_s``)."""


def plan_memory(plan) -> dict[str, float]:
    """The most loaded device's breakdown (bytes by label) of a training plan, as the job
    allocates it."""
    stages = getattr(plan, "stages", None)
    if stages is not None:
        return dict(max(plan.memory, key=lambda m: sum(m.values())))
    from hwsim.workloads import training_memory

    return dict(plan.memory) if plan.memory is not None else training_memory(
        plan.model, precision=plan.precision, optimizer=plan.optimizer, dp=len(plan.ranks))


FLOW_COLLECTIVE = 30.0
"""Cost of a tensor-parallel collective that shares its links, in compute ops
(:func:`simulation_cost`)."""
TIMED_COLLECTIVE = 3.0
"""The same for a collective alone on its links (laid out with the compute ops)."""


def simulation_cost(plan, gpn: int = 1) -> float:
    """A relative cost of simulating *plan*, to hand out the longest simulations first: per
    simulated micro-batch, the ops of every pipeline stage (folded, one rank each: the whole
    model's ops), its collectives weighted by :data:`TIMED_COLLECTIVE`, or by
    :data:`FLOW_COLLECTIVE` where the tensor-parallel groups share their server's links with
    a data-parallel group (tp below the *gpn* devices per server and dp > 1: the data-parallel
    ring has two members in a server, so the tensor-parallel collectives are not alone on
    their links, :meth:`~hwsim.jobs.communicator.CollectiveGroup.timing`, and each is a
    simulation step of its own, in closed form while the links are idle, else flows);
    times the micro-batches simulated (fewer than the step's where its steady phase is
    advanced: :mod:`hwsim.jobs.steady`) and the steps. Fitted to the CPU seconds of 22
    GPT-3 175B layouts on 1,024 A100 (0.4 to 60 s) when such collectives ran as flows; with
    the closed form it still orders all 415 layouts of that whole-space search best of the
    weights 3-30 (Spearman correlation 0.94 with their CPU seconds; 0.84 at 10, 0.63 at 3).
    Only its order matters."""
    from hwsim.scenario.build import simulated_micro_batches

    stages = getattr(plan, "stages", None)
    if stages is None:  # data parallel: one model's ops per micro-batch
        per_mb = len(plan.model.forward) + len(plan.model.backward)
        return float(per_mb * plan.micro_batches * plan.steps)
    flows = plan.tp * plan.cp < gpn and plan.dp * plan.cp > 1
    weight = FLOW_COLLECTIVE if flows else TIMED_COLLECTIVE
    per_mb = sum(2 + sum(weight if op.comm else 1.0 for op in c.forward + c.backward)
                 for st in stages for c in st)
    m = plan.micro_batches
    sim = simulated_micro_batches(plan.schedule, plan.pp, m, plan.virtual_stages) if (
        plan.steady_state) else m
    return float(per_mb * sim * plan.steps)


class Evaluator:
    """Plans, prunes, estimates and simulates the layouts of one base scenario (a validated
    training Scenario), reusing its graph, router and plan cache across layouts."""

    def __init__(self, base) -> None:
        from hwsim.scenario.build import scenario_graph
        from hwsim.topology import compute_devices

        self.base = base
        self.graph = scenario_graph(base)
        self.devices = compute_devices(self.graph, base.compute_device)
        self.capacity = min(get_device(self.graph.nodes[d]["spec"]).memory_bytes
                            for d in self.devices)
        self.per_server = per_server(self.graph, self.devices)
        self.cache: dict = {}
        self._shared = False

    def plan(self, layout: Mapping[str, Any]):
        """(validated scenario, plan) of *layout*; a ScenarioError where the builder refuses."""
        from hwsim.scenario import load_scenario
        from hwsim.scenario.build import training_plan

        s = load_scenario(with_layout(self.base, layout))
        return s, training_plan(s, self.graph, cache=self.cache)

    def assess(self, layout: Mapping[str, Any]) -> dict[str, Any]:
        """The row of *layout* before simulating: ``status`` ``invalid`` (with the builder's
        ``reason``), ``pruned_memory`` (does not fit: the memory model's most loaded device above
        the capacity, the test of the job's memory pools) or ``not_simulated`` (fits; with
        ``estimate_step_time_s``), and the memory breakdown ``memory_<label>_gb``. A layout
        that fits has ``_cost`` (:func:`simulation_cost`) when it can be simulated, or a
        ``reason`` when a run of it would be refused by the event budget
        (:func:`~hwsim.scenario.budget.check_budget`: ``limits.max_events``)."""
        from hwsim.scenario.budget import DEFAULT_MAX_EVENTS, estimate

        row: dict[str, Any] = {"status": "invalid"}
        try:
            s, plan = self.plan(layout)
        except ScenarioError as err:
            row["reason"] = f"{err.field}: {err.reason}" if err.field else err.reason
            return row
        memory = plan_memory(plan)
        need = sum(memory.values())
        row["memory_per_device_gb"] = need / 1e9
        row.update({f"memory_{k}_gb": b / 1e9 for k, b in memory.items()})
        if need > self.capacity * (1 + 1e-12):  # the test of hwsim.engine.pool.Pool.fits
            row.update(status="pruned_memory", fits=False,
                       reason=f"does not fit: {need / 1e9:.4g} GB needed of "
                              f"{self.capacity / 1e9:.4g} GB")
            return row
        row.update(status="not_simulated", fits=True,
                   estimate_step_time_s=estimate_step_time(plan, self.graph))
        # the event budget a run of the scenario checks first (hwsim.scenario.budget)
        est, cap = estimate(s), s.limits.max_events or DEFAULT_MAX_EVENTS
        if est.events > cap:
            row["reason"] = (f"refused by the event budget: about {est.events:.3g} events "
                             f"({est.detail}), beyond the limit of {cap:,} (limits.max_events)")
        else:
            row["_cost"] = simulation_cost(plan, self.per_server)
        return row

    def simulate(self, layout: Mapping[str, Any]) -> dict[str, Any]:
        """The run of the scenario with *layout*: :data:`SIMULATED_KEYS` of its summary and
        ``simulation_s`` (CPU seconds the run took in its process). The event budget is not
        checked again: :meth:`assess` has."""
        from hwsim.scenario.build import run_scenario, share_graph

        if not self._shared:
            share_graph(self.graph)
            self._shared = True
        t0 = time.process_time()
        s, plan = self.plan(layout)
        summary = run_scenario(s, prepared=(self.graph, plan), record="summary").summary
        out = {k: summary.get(k) for k in SIMULATED_KEYS}
        out["simulation_s"] = time.process_time() - t0
        return out


# -- in this process or in workers ----------------------------------------------------------

_WORKER: Evaluator | None = None


def _init(base) -> None:
    global _WORKER
    _WORKER = Evaluator(base)


def _assess(layouts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    assert _WORKER is not None
    return [_WORKER.assess(x) for x in layouts]


def _simulate(layout: Mapping[str, Any]) -> dict[str, Any]:
    assert _WORKER is not None
    return _WORKER.simulate(layout)


def pool(base, workers: int) -> ProcessPoolExecutor:
    """*workers* processes, each with its :class:`Evaluator` of *base*."""
    return ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(base,))


def assess_all(layouts: Sequence[Mapping[str, Any]], local: Evaluator,
               executor: ProcessPoolExecutor | None = None) -> list[dict[str, Any]]:
    """:meth:`Evaluator.assess` of every layout, in order: here (*local*), or in the workers of
    *executor* in a few chunks each."""
    if executor is None or len(layouts) < 2:
        return [local.assess(x) for x in layouts]
    n = max(1, executor._max_workers)  # noqa: SLF001 - the pool's own size
    size = max(1, -(-len(layouts) // (4 * n)))
    chunks = [layouts[i:i + size] for i in range(0, len(layouts), size)]
    return [row for part in executor.map(_assess, chunks) for row in part]


def simulate_all(layouts: Sequence[Mapping[str, Any]], costs: Iterable[float], local: Evaluator,
                 executor: ProcessPoolExecutor | None = None,
                 done: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """:meth:`Evaluator.simulate` of every layout, returned in the order given; in the workers
    of *executor* (when given) they are handed out one at a time, the largest *costs* first.
    *done*, when given, is called with the number finished so far."""
    cost = list(costs)
    order = sorted(range(len(layouts)), key=lambda i: (-cost[i], i))
    results: list[dict[str, Any]] = [{} for _ in layouts]
    if executor is None or len(layouts) < 2:
        runs: Iterable[dict[str, Any]] = (local.simulate(layouts[i]) for i in order)
    else:
        runs = executor.map(_simulate, [layouts[i] for i in order])
    for k, (i, res) in enumerate(zip(order, runs)):
        results[i] = res
        if done is not None:
            done(k + 1)
    return results
