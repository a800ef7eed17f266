"""One run: a topology graph, jobs and the engine wired together, and the Result built from the
records. The only module that assembles the layers."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import simpy

from hwsim.analysis.power import clock_factor, job_energy, power_summary
from hwsim.analysis.result import Result
from hwsim.catalog import get_device, get_storage
from hwsim.columnar import Table
from hwsim.engine import Recorder
from hwsim.heap import frozen_heap
from hwsim.jobs.parallel import ParallelPlan, ParallelTrainingJob
from hwsim.jobs.resilience import FAILURE_COLUMNS, FailureSpec, run_plan, simulate_run
from hwsim.jobs.batching import BatchingJob, BatchingPlan
from hwsim.jobs.dataloader import DataLoaderJob, DataLoaderPlan
from hwsim.jobs.epochs import epoch_phases, epoch_steps_time
from hwsim.jobs.serving import ServingJob, ServingPlan
from hwsim.jobs.system import System
from hwsim.jobs.training import TrainingJob, TrainingPlan, slowest_step_ends
from hwsim.jobs.transfer import TransferJob, TransferPlan
from hwsim.progress import progress, shown
from hwsim.summaries import (dataloader_summary, serving_job_summary, training_summary,
                             transfer_summary)
from hwsim.topology import component_counts

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["simulate", "simulate_jobs", "collective_time"]


def simulate(graph, job: TrainingPlan | ParallelPlan | DataLoaderPlan | Sequence[TransferPlan], *,
             name: str,
             seed: int = 0,
             config: dict[str, Any] | None = None, utilization_bin_s: float | None = None,
             until_s: float | None = None, failures: FailureSpec | None = None,
             record: str = "ops", spill: str | Path | None = None) -> Result:
    """Run *job* on the hardware *graph* and return its :class:`Result`.

    A training job with *failures* is then played as a whole run with failures and checkpoints
    (:func:`_whole_run`). *record* is ``outputs.record`` (``ops``, ``full`` or ``summary``: what
    the run keeps of its events, :class:`~hwsim.engine.Recorder`); with *spill* the events are
    streamed to that file as the run goes instead of kept in memory (``hwsim run --out``).

    The run owns one ``numpy.random.Generator`` seeded with *seed*; nothing is global, so two
    runs in one process do not interfere and the same inputs give identical frames.
    """
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    recorder = _recorder(record, spill, [("transfer", job)])
    system = System(env, graph, recorder, rng)
    if isinstance(job, ParallelPlan) and job.steady_state and until_s is not None:
        job = replace(job, steady_state=False)  # a time limit cuts the run the advance skips
    runner = _runner(system, job)
    runner.start()
    _run(env, [runner], until_s, name)
    end = env.now
    if isinstance(runner, ParallelTrainingJob) and runner.compressed and runner.fits:
        if not runner.periodic:  # the steady phase did not repeat: simulate every micro-batch
            recorder.close()
            return simulate(graph, replace(job, steady_state=False), name=name, seed=seed,
                            config=config, utilization_bin_s=utilization_bin_s,
                            failures=failures, record=record, spill=spill)
        end += runner.advance()
    extra: dict[str, pd.DataFrame] = {}
    if isinstance(runner, (ServingJob, BatchingJob)):
        return _serving_result(runner, recorder, end, name, config, utilization_bin_s)
    if isinstance(runner, (TrainingJob, ParallelTrainingJob)):  # rank 0's events suffice
        summary, breakdown = training_summary(runner, recorder.events_table(rank=0))
        if summary["fits"] and isinstance(job, (TrainingPlan, ParallelPlan)):
            _cached_epochs(graph, job, summary, seed)
            summary.update(epoch_phases(job, summary, slowest_step_ends(runner.step_ends)))
        if summary["fits"] and failures is not None:
            extra["failures"] = _whole_run(summary, failures, graph, runner,
                                           system.rng)
    elif isinstance(runner, DataLoaderJob):
        summary, breakdown = dataloader_summary(runner, recorder.events_table(rank=0))
    else:
        summary, breakdown = transfer_summary(runner, recorder.events_table(job=runner.job))
    summary["simulated_time_s"] = end
    summary["flows"] = system.net.flows_finished
    summary.update(_power(graph, recorder, end, summary))
    if isinstance(runner, (TrainingJob, ParallelTrainingJob)):
        extra["steps"] = _steps_frame(runner)
    # the full frames are built when first read
    return Result(name=name, summary=summary, bottleneck=breakdown, config=dict(config or {}),
                  **_frames(recorder, end, utilization_bin_s, summary, graph), **extra)


def _recorder(record: str, spill: str | Path | None, jobs: Sequence[tuple[str, Any]]
              ) -> Recorder:
    """The run's recorder at level *record*; the transfer jobs among *jobs* ``(name, plan)``
    keep all their events at ``summary`` (their summary reads every rank's)."""
    keep = [n for n, plan in jobs if not isinstance(plan, (TrainingPlan, ParallelPlan,
                                                           ServingPlan, BatchingPlan,
                                                           DataLoaderPlan))]
    return Recorder(record, spill=spill, keep_jobs=keep)


def _frames(recorder: Recorder, end: float, bin_s: float | None, summary: dict, graph
            ) -> dict[str, Any]:
    """The Result's recorded frames, built when first read, and how its events were kept."""
    kept = recorder.record_level != "summary"
    return dict(events=recorder.events_frame,
                utilization=_utilization(recorder, end, bin_s, summary),
                memory=recorder.memory_table, loads=recorder.loads_frame,
                slots=recorder.slots, device_specs=_device_specs(graph),
                record=recorder.record_level, release=recorder.close,
                event_batches=recorder.event_batches if kept else None)


def _cached_epochs(g, job: TrainingPlan | ParallelPlan, summary: dict,
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
                      seed=seed, record="summary").summary.get("step_time_s") or t
    time = summary["time_to_train_s"] - (total - sim) * t
    summary["time_to_train_s"] = time + epoch_steps_time(sim, total, per_epoch, t, cached, fits,
                                                          len(hosts))
    summary["cached_step_time_s"] = cached


def _whole_run(s: dict, spec: FailureSpec, graph, job: TrainingJob | ParallelTrainingJob,
               rng: np.random.Generator) -> pd.DataFrame:
    """The run-scale hybrid (docs/model.md, "Failures and whole runs"): the whole run of
    ``total_steps`` steady-state steps with failures and checkpoints, on a Generator spawned
    from the run's (so the steps' own draws do not shift the failures). Updates the summary
    *s* (``time_to_train_s`` then includes failures and checkpoints); returns the per-failure
    table."""
    plan = job.plan
    parallel = isinstance(job, ParallelTrainingJob)
    devices = list(plan.devices if parallel else plan.ranks)
    run = run_plan(spec, step_time_s=s["step_time_s"], total_steps=s["total_steps"],
                   ideal_s=s["time_to_train_s"] - (s.get("checkpoint_stall_total_s") or 0.0),
                   counts=component_counts(graph, devices),
                   replicas=plan.dp if parallel else len(devices), summary=s)
    out, rows = simulate_run(run, rng.spawn(1)[0])
    s.update(out)
    import pandas as pd

    return pd.DataFrame(rows, columns=list(FAILURE_COLUMNS))


def simulate_jobs(graph, jobs: Sequence[tuple[str, Any, float]], *, name: str, seed: int = 0,
                  config: dict[str, Any] | None = None, utilization_bin_s: float | None = None,
                  until_s: float | None = None, record: str = "ops",
                  spill: str | Path | None = None) -> Result:
    """Run several jobs on one hardware *graph* at once and return one :class:`Result`.

    *jobs* lists ``(name, plan, start_s)``: each plan (as :func:`simulate` takes, its events
    tagged with its job name) is started at ``start_s``; times inside a plan (transfer starts,
    request arrivals) count from there. All run in one SimPy environment over one
    :class:`System`, so they share links, storage channels and host streams as the flow model
    shares bandwidth. The summary holds whole-run keys (``jobs``, ``devices``, ``fits``,
    ``simulated_time_s``, ``flows``) and, flat, each job's summary keys as
    ``job.<name>.<key>`` plus ``job.<name>.start_s`` / ``end_s``; ``bottleneck``, ``requests``
    and ``iterations`` have a ``job`` column. *record* and *spill* as for :func:`simulate`.
    """
    env = simpy.Environment()
    recorder = _recorder(record, spill, [(n, plan) for n, plan, _ in jobs])
    system = System(env, graph, recorder, np.random.default_rng(seed))
    if len(jobs) > 1:
        # A closed-form collective time holds only for a group alone on its links; a job that
        # arrives later may cross them. Claimed by the run, no channel is any group's alone:
        # every collective runs as flows and sees the other jobs' traffic.
        system.claim("shared cluster", list(system.net.channels))
    runners = []
    for job_name, plan, start in jobs:
        runner = _runner(system, _arriving(plan, start), job_name)
        runners.append(runner)
        if start > 0:
            env.process(_start_at(env, runner, start))
        else:
            runner.start()
    _run(env, runners, until_s, name)
    end = env.now
    ends = recorder.job_ends()
    first = recorder.events_table(rank=0)
    summary: dict[str, Any] = {"jobs": len(jobs)}
    parts, requests, iterations = [], [], []
    own: dict[str, dict] = {}  # each job's summary keys (its energy per unit of work)
    for (job_name, _, start), runner in zip(jobs, runners):
        job_end = ends.get(job_name, start)  # nothing ran: does not fit
        if isinstance(runner, (ServingJob, BatchingJob)):
            s, breakdown, req, its = serving_job_summary(runner, first, job_end)
            requests.append(req.assign(job=job_name))
            iterations.append((its() if callable(its) else its).assign(job=job_name))
        elif isinstance(runner, (TrainingJob, ParallelTrainingJob)):
            s, breakdown = training_summary(runner, first, start_s=start)
        else:
            s, breakdown = transfer_summary(runner, recorder.events_table(job=job_name))
        s.update(start_s=start, end_s=job_end)
        own[job_name] = s
        summary.update({f"job.{job_name}.{k}": v for k, v in s.items()})
        parts.append(Table.of(breakdown).to_pandas().assign(job=job_name))
    summary["devices"] = sum(summary.get(f"job.{n}.devices") or 0 for n, _, _ in jobs)
    summary["fits"] = all(summary.get(f"job.{n}.fits", True) for n, _, _ in jobs)
    summary["simulated_time_s"] = end
    summary["flows"] = system.net.flows_finished
    busy = recorder.stream_busy_s(end) if summary["fits"] else {}
    summary.update(_power(graph, recorder, end, summary, busy))
    if busy:
        summary.update(job_energy(graph, busy, end, [(n, _held(plan)) for n, plan, _ in jobs],
                                  summary, own))
    steps = [_steps_frame(r, start) for (_, _, start), r in zip(jobs, runners)
             if isinstance(r, (TrainingJob, ParallelTrainingJob))]

    import pandas as pd  # several jobs: their frames joined

    def first_job(frames: list[pd.DataFrame]) -> pd.DataFrame:  # the job column first
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        return df[["job", *[c for c in df.columns if c != "job"]]]
    return Result(name=name, summary=summary,
                  steps=pd.concat([t.to_pandas() for t in steps], ignore_index=True) if steps
                  else pd.DataFrame(),
                  bottleneck=first_job(parts),
                  config=dict(config or {}), requests=first_job(requests),
                  iterations=first_job(iterations),
                  **_frames(recorder, end, utilization_bin_s, summary, graph))


MAX_UTILIZATION_BINS = 10_000
"""Time bins ``Result.utilization`` may have; a finer ``outputs.utilization_bin_s`` is coarsened
(``hwsim.utilization(result, ..., bin_s=...)`` still gives any resolution for some resources)."""


def _utilization(recorder: Recorder, end: float, bin_s: float | None, summary: dict):
    """The builder of ``Result.utilization`` over ``[0, end]`` in bins of *bin_s* (None: 100
    bins), at most :data:`MAX_UTILIZATION_BINS` of them: a finer bin is coarsened to ``end /
    MAX_UTILIZATION_BINS`` and *summary* says so (``utilization_bin_s``, ``utilization_note``)
    rather than allocating a table of billions of rows."""
    if bin_s is not None and end > 0 and end / bin_s > MAX_UTILIZATION_BINS:
        coarse = end / MAX_UTILIZATION_BINS
        summary["utilization_bin_s"] = coarse
        summary["utilization_note"] = (
            f"outputs.utilization_bin_s {bin_s:.3g} s would make {end / bin_s:.3g} bins over the "
            f"{end:.3g} s simulated; coarsened to {coarse:.3g} s ({MAX_UTILIZATION_BINS:,} bins, "
            f"the most a run records)")
        bin_s = coarse
    return lambda: recorder.utilization_table(end, bin_s)


def _power(graph, recorder: Recorder, end: float, summary: dict,
           busy: dict[str, float] | None = None) -> dict[str, Any]:
    """The power and energy summary keys (:func:`hwsim.analysis.power.power_summary`) of a run
    that ended at *end*, with the scenario's ``power:`` section the graph carries (PUE, GPU
    power cap); none for a job that does not fit (it never ran). *busy*: the recorder's
    :meth:`~hwsim.engine.Recorder.stream_busy_s` where the caller has it already."""
    if not summary.get("fits", True):
        return {}
    p = graph.graph.get("power") or {}
    busy = recorder.stream_busy_s(end) if busy is None else busy
    out = power_summary(graph, busy, end, summary, pue=float(p.get("pue") or 1.0))
    if p.get("gpu_power_cap_w") is not None:
        out["gpu_power_cap_w"] = float(p["gpu_power_cap_w"])
        gpus = sorted({d["spec"] for _, d in graph.nodes(data=True) if d.get("kind") == "gpu"})
        if gpus:  # the first GPU type's compute clock under the cap
            base = get_device(gpus[0])
            out["gpu_clock_factor"] = clock_factor(base.idle_power_w, base.busy_w,
                                                   out["gpu_power_cap_w"])
    return out


def _held(plan: Any) -> tuple[str, ...]:
    """The compute devices a job's *plan* holds (none for data-loading and transfer jobs)."""
    if isinstance(plan, ParallelPlan):
        return tuple(plan.devices)
    if isinstance(plan, TrainingPlan):
        return tuple(plan.ranks)
    if isinstance(plan, ServingPlan):
        return tuple(d for replica in plan.replicas for d in replica)
    if isinstance(plan, BatchingPlan):
        return tuple(plan.replicas)
    return ()


def _device_specs(graph) -> dict[str, str]:
    """Compute device node -> catalog id (``Result.device_specs``)."""
    return {str(n): str(d["spec"]) for n, d in graph.nodes(data=True)
            if d.get("kind") in ("gpu", "tpu", "cpu") and d.get("spec")}


def _steps_frame(job: TrainingJob | ParallelTrainingJob, start_s: float = 0.0) -> Table:
    """``Result.steps``: ``job, step, start_s, end_s`` of every simulated step (the slowest
    rank's ends), empty when the job does not fit."""
    ends = list(slowest_step_ends(job.step_ends)) if job.fits else []
    return Table({"job": [str(job.plan.job)] * len(ends),
                  "step": np.arange(len(ends), dtype=np.int64),
                  "start_s": np.asarray([start_s, *ends[:-1]], float)[:len(ends)],
                  "end_s": np.asarray(ends, float)})


def _run(env: simpy.Environment, runners: Sequence[Any], until_s: float | None,
         label: str) -> None:
    """``env.run(until_s)``; on a terminal (:func:`hwsim.progress.shown`), stepped with a bar of
    the jobs' steps done (training) or requests finished (serving), so an unobserved run pays
    nothing. The objects made before it are left out of garbage collection while it runs
    (:func:`hwsim.heap.frozen_heap`)."""
    with frozen_heap():
        _stepped(env, runners, until_s, label)


def _stepped(env: simpy.Environment, runners: Sequence[Any], until_s: float | None,
             label: str) -> None:
    counts = [_done_of(r) for r in runners]
    if not shown() or any(c is None for c in counts):
        env.run(until=until_s)
        return
    limit = math.inf if until_s is None else until_s
    with progress(sum(total for _, total in counts), label) as bar:
        while env.peek() < limit:
            for _ in range(4096):
                if env.peek() >= limit:
                    break
                env.step()
            bar.update(sum(done() for done, _ in counts))
    env.run(until=until_s)


def _done_of(runner: Any) -> tuple[Any, int] | None:
    """(a function: units done so far, the units in all) of a job, None if it has no count."""
    if isinstance(runner, (ServingJob, BatchingJob)):
        return (lambda: runner.finished), len(runner.plan.requests)
    if isinstance(runner, (TrainingJob, ParallelTrainingJob, DataLoaderJob)):
        return (lambda: max(map(len, runner.step_ends), default=0)), runner.plan.steps
    return None


def _runner(system: System, plan: Any, name: str | None = None) -> Any:
    """The SimPy job that runs *plan* (a transfer list's events tagged *name*)."""
    if isinstance(plan, TrainingPlan):
        return TrainingJob(system, plan)
    if isinstance(plan, ParallelPlan):
        return ParallelTrainingJob(system, plan)
    if isinstance(plan, ServingPlan):
        return ServingJob(system, plan)
    if isinstance(plan, BatchingPlan):
        return BatchingJob(system, plan)
    if isinstance(plan, DataLoaderPlan):
        return DataLoaderJob(system, plan)
    return TransferJob(system, list(plan), *([name] if name else []))


def _arriving(plan: Any, start: float) -> Any:
    """*plan* for a job that starts at *start*: a serving plan's request arrivals (times from
    the job's start) moved to run time."""
    if start > 0 and isinstance(plan, (ServingPlan, BatchingPlan)):
        return replace(plan, requests=tuple(replace(r, arrival_s=r.arrival_s + start)
                                            for r in plan.requests))
    return plan


def _start_at(env: simpy.Environment, runner: Any, start: float):
    yield env.timeout(start)
    runner.start()


def _serving_result(job: ServingJob | BatchingJob, recorder: Recorder, end: float, name: str,
                    config: dict[str, Any] | None, bin_s: float | None) -> Result:
    s, breakdown, req, iterations = serving_job_summary(job, recorder.events_table(rank=0), end)
    s.update(_power(job.system.graph, recorder, end, s))
    return Result(name=name, summary=s, bottleneck=breakdown, config=dict(config or {}),
                  requests=req, iterations=iterations,
                  **_frames(recorder, end, bin_s, s, job.system.graph))


def collective_time(graph, op: str, devices: Sequence[str], nbytes: float, *,
                    algorithm: str = "auto") -> tuple[float, str]:
    """One collective alone on *graph*, as nccl-tests runs it (``hwsim calibrate``): *op*
    (``allreduce``, ``allgather``, ``reduce_scatter``, ``alltoall``, ``broadcast``,
    ``sendrecv``) of *nbytes* over *devices* with *algorithm* (``auto``: NCCL's choice,
    :func:`hwsim.jobs.collectives.choose`). Returns the time (s) and ``"algorithm/protocol"``."""
    from hwsim.jobs.collectives import choose, collective

    env = simpy.Environment()
    system = System(env, graph, Recorder())
    alg, proto = choose(system, list(devices), op, nbytes, algorithm=algorithm)
    env.process(collective(system, op, list(devices), nbytes, algorithm=alg, protocol=proto))
    env.run()
    return float(env.now), f"{alg}/{proto}"
