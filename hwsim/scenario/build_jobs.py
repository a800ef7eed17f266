"""Shared clusters (``jobs:``): which devices each job gets, and each job's plan on the one graph.

Jobs are placed in the order listed. A job holds its devices for the whole run: there is no
queueing, so a job that asks for more devices than the earlier jobs left free is an error, even
if it arrives after they finish. Placement policies (:func:`place`):

- ``packed``: as few servers as possible, inside one NVLink domain where servers share one
  (``node.nvlink_domain``) and the job fits one domain's free devices (best fit, as below, then
  packed inside it). A job that fits in one server's free devices goes to
  the server with the fewest free devices that holds it (best fit, first in node order on a
  tie), leaving whole servers free; a larger job takes servers in order of most free devices
  (whole free servers first), each server's devices in node order.
- ``spread``: round-robin over the servers that have free devices, in node order: one device
  from each, then a second from each, ...
- ``first_fit``: the first free devices in node order.

A job's ranks are its devices in node order, whatever the policy (rank 0 is the first).
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from hwsim.exceptions import ScenarioError
from hwsim.topology.nvl import scale_up
from hwsim.scenario.build_inference import serving_plan
from hwsim.scenario.schema import InferenceWorkload, Scenario, TrainingWorkload
from hwsim.topology import compute_devices, natural_key

__all__ = ["place", "job_plans"]


def place(g: nx.Graph, free: list[str], count: int, policy: str) -> list[str]:
    """*count* devices out of *free* (device nodes of *g*, in node order) by *policy*
    (``packed``, ``spread`` or ``first_fit``; see the module docstring), in node order. The
    caller checks that *free* holds *count*."""
    if policy == "first_fit":
        return free[:count]
    if policy == "packed":  # NVLink domains first: a job that fits one stays on NVLink
        domains: dict[tuple, list[str]] = {}
        for d in free:
            domains.setdefault(scale_up(g.nodes[d]), []).append(d)
        holds = [grp for grp in domains.values() if len(grp) >= count]
        if any("domain" in g.nodes[d] for d in free) and holds:
            free = min(holds, key=len)
    servers: dict[tuple, list[str]] = {}
    for d in free:
        at = g.nodes[d]
        servers.setdefault((at.get("site"), at.get("server")), []).append(d)
    groups = list(servers.values())
    if policy == "spread":
        picked: list[str] = []
        depth = 0
        while len(picked) < count:
            picked += [grp[depth] for grp in groups if depth < len(grp)][:count - len(picked)]
            depth += 1
    elif policy == "packed":
        holds = [grp for grp in groups if len(grp) >= count]
        if holds:
            picked = min(holds, key=len)[:count]
        else:
            ordered = sorted(groups, key=len, reverse=True)  # stable: node order on ties
            picked = [d for grp in ordered for d in grp][:count]
    else:
        raise ValueError(f"unknown placement {policy!r}")
    return sorted(picked, key=natural_key)


def job_plans(s: Scenario, g: nx.Graph) -> list[tuple[str, Any, float]]:
    """``(name, plan, start_s)`` of every job of *s*, each planned on its own devices of *g*
    (placed in the order listed); errors name the job's field path (``jobs[1].devices``)."""
    from hwsim.scenario.build import training_plan, transfer_plans

    assert s.jobs is not None
    taken: dict[str, str] = {}  # device -> job holding it
    out = []
    for i, job in enumerate(s.jobs):
        sub = s.job_scenario(i)
        try:
            if isinstance(job.workload, (TrainingWorkload, InferenceWorkload)):
                devices = _devices(g, sub.compute_device, job, i, taken)
                taken.update((d, job.name) for d in devices)
                if isinstance(job.workload, TrainingWorkload):
                    plan: Any = training_plan(sub, g, devices, job.name)
                else:
                    plan = serving_plan(sub, g, devices, job.name)
                    _uses_all(plan, len(devices), i)
            else:
                plan = transfer_plans(sub, g)
        except ScenarioError as err:
            field = err.field or ""
            if field.startswith("workload") or not field:
                field = f"jobs[{i}]." + (field or "workload")
            raise ScenarioError(err.reason, file=err.file, field=field) from err
        out.append((job.name, plan, job.start))
    return out


def _devices(g: nx.Graph, kind: str, job, i: int, taken: dict[str, str]) -> list[str]:
    """The devices of job *i*: its ``nodes``, checked, or ``devices`` placed on the free ones."""
    candidates = compute_devices(g, kind)
    if job.nodes is not None:
        known = set(candidates)
        for j, n in enumerate(job.nodes):
            if n not in known:
                raise ScenarioError(
                    f"{n!r} is not a {kind} device the job can run on; valid: "
                    f"{', '.join(candidates[:8])}{' ...' if len(candidates) > 8 else ''}",
                    field=f"jobs[{i}].nodes[{j}]")
            if n in taken:
                raise ScenarioError(f"{n!r} is already held by job {taken[n]!r}; a device runs "
                                    f"one job at a time", field=f"jobs[{i}].nodes[{j}]")
        return sorted(job.nodes, key=natural_key)
    free = [d for d in candidates if d not in taken]
    if job.devices > len(free):
        held = {}
        for owner in taken.values():
            held[owner] = held.get(owner, 0) + 1
        by = ", ".join(f"{n} {c}" for n, c in held.items())
        raise ScenarioError(
            f"job {job.name!r} asks for {job.devices} {kind} devices but only {len(free)} of the "
            f"cluster's {len(candidates)} are free" + (f" (held: {by})" if by else "") +
            "; jobs hold their devices for the whole run (no queueing); valid: devices <= "
            f"{len(free)}", field=f"jobs[{i}].devices")
    return place(g, free, job.devices, job.placement or "packed")


def _uses_all(plan: Any, held: int, i: int) -> None:
    """A serving job's replicas use every device it holds (a held device would sit idle)."""
    per = len(plan.replicas[0]) if isinstance(plan.replicas[0], tuple) else 1
    used = per * len(plan.replicas)
    if used != held:
        raise ScenarioError(f"{len(plan.replicas)} replicas of {per} devices use {used} of the "
                            f"job's {held} devices; valid: devices: {used} or replicas: "
                            f"{held // per}", field=f"jobs[{i}].workload.parallelism.replicas")
