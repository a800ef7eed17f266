"""Power and energy of a cluster, per component, from its utilisation (docs/analysis.md, "Power").

The model, for every component with an idle and a busy figure in the catalog:

    P(t) = idle_w + (busy_w - idle_w) * u(t),      u in [0, 1]
    E    = integral of P dt = sum over time bins of P * bin_s

- **compute devices** (GPUs, TPUs, CPU sockets): u is the device's compute-stream utilisation
  (``Result.utilization`` rows ``<device>/compute``); ``busy_w`` is the catalog's measured busy
  power (``DeviceSpec.busy_w``: ``busy_power``, else the TDP as an upper bound), not the TDP;
- **NIC and switch ports** (``LinkSpec.power_w``: the port's optics or cable): a constant draw,
  no public idle/busy split; a switch is its ports (its ASIC has no public figure here);
- **storage** (``StorageSpec.idle_power_w`` / ``active_power_w``): the idle figure (else the
  active one), storage I/O power is not modelled;
- NVSwitch, PCIe switches, host memory and routers: no public figure, no power.

Facility power is IT power times the PUE. A **power cap** (``power.gpu_power_cap_w``) lowers the
GPU's busy power to the cap and its compute clock by :func:`clock_factor`. A **rack limit**
(``power.rack_limit_kw``) is checked against the servers' power with every component busy
(:func:`check_rack_limit`). Plain functions of numbers and a topology graph; nothing of SimPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from hwsim.catalog.power import CLOCK_POWER_EXPONENT, capped_spec, clock_factor
from hwsim.topology.power import check_rack_limit, device_spec, server_busy_power_w

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["power_w", "energy_j", "clock_factor", "capped_spec", "device_power",
           "component_power", "power_summary", "per_unit_energy", "job_energy",
           "server_busy_power_w", "check_rack_limit", "CLOCK_POWER_EXPONENT", "COMPONENTS"]

COMPONENTS = ("gpu", "cpu", "nic", "switch", "storage")
"""The component classes of the power breakdown (TPUs count as ``gpu``: the accelerators)."""


def power_w(idle_w: Any, busy_w: Any, utilization: Any) -> np.ndarray:
    """Power (W) at *utilization* (clipped to [0, 1]): ``idle + (busy - idle) * u``; always
    within [idle, busy].

    >>> float(power_w(70.0, 576.0, 0.5))
    323.0
    """
    u = np.clip(np.asarray(utilization, float), 0.0, 1.0)
    idle, busy = np.asarray(idle_w, float), np.asarray(busy_w, float)
    return idle + (busy - idle) * u


def energy_j(idle_w: float, busy_w: float, utilization: Any, bin_s: Any) -> float:
    """Energy (J): the integral of :func:`power_w` over bins of widths *bin_s* with
    utilisations *utilization* (the sum of P x bin_s). For one bin it is the closed form
    ``idle * T + (busy - idle) * busy_s`` with ``busy_s = u * T``."""
    return float(np.sum(power_w(idle_w, busy_w, utilization) * np.asarray(bin_s, float)))


def device_power(result: Any, bin_s: float | None = None, cap_w: float | None = None
                 ) -> pd.DataFrame:
    """Power of every compute device of *result* over time: one row per device and time bin
    of its compute stream's utilisation (:func:`hwsim.analysis.utilization`), columns
    ``time_s, bin_s, device, spec, utilization, power_w, energy_j`` (``power_w x bin_s``). The
    device's energy over the run is the sum of its ``energy_j``. *cap_w*: a GPU power cap
    (default: the run's ``gpu_power_cap_w`` summary key)."""
    import pandas as pd

    from hwsim.analysis.utilization import utilization
    from hwsim.catalog import get_device

    cap = result.summary.get("gpu_power_cap_w") if cap_w is None else cap_w
    cols = ["time_s", "bin_s", "device", "spec", "utilization", "power_w", "energy_j"]
    try:
        u = utilization(result, r".*/compute", bin_s)
    except ValueError:  # no compute stream at all
        return pd.DataFrame({c: [] for c in cols})
    u = u[u["resource"].str.rsplit("/", n=1).str[0].isin(list(result.device_specs))]
    dev = u["resource"].str.rsplit("/", n=1).str[0]
    frames = []
    for d, g in u.groupby(dev, sort=True):
        spec_id = result.device_specs[d]
        spec = get_device(spec_id)
        if cap is not None and spec.kind == "gpu":
            spec = capped_spec(spec, float(cap))
        p = power_w(spec.idle_power_w, spec.busy_w, g["utilization"].to_numpy())
        frames.append(pd.DataFrame({"time_s": g["time_s"].to_numpy(),
                                    "bin_s": g["bin_s"].to_numpy(), "device": d, "spec": spec_id,
                                    "utilization": g["utilization"].to_numpy(), "power_w": p,
                                    "energy_j": p * g["bin_s"].to_numpy()}, columns=cols))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in cols})


def _port_power(graph) -> tuple[float, float]:
    """(NIC watts, switch watts) of *graph*: each NIC node its link's ``power_w``; each end of a
    link at a fabric switch or router that link's ``power_w`` times the edge's ``count``."""
    from hwsim.catalog import get_link
    from hwsim.exceptions import ScenarioError as _Missing

    memo: dict[Any, float] = {}

    def watts(link: Any) -> float:
        if link not in memo:
            try:
                memo[link] = float(get_link(str(link)).power_w or 0.0)
            except _Missing:
                memo[link] = 0.0  # an internal edge ('memory-bus'), not a catalog link
        return memo[link]
    kinds = {n: d.get("kind") for n, d in graph.nodes(data=True)}
    nic = sum(watts(d.get("spec")) for n, d in graph.nodes(data=True) if d.get("kind") == "nic")
    switch = 0.0
    for u, v, d in graph.edges(data=True):
        ends = (kinds[u] in ("switch", "router")) + (kinds[v] in ("switch", "router"))
        if ends:
            switch += ends * int(d.get("count", 1)) * watts(d.get("link"))
    return nic, switch


def _storage_power(graph) -> float:
    from hwsim.catalog import get_storage

    total = 0.0
    for _, d in graph.nodes(data=True):
        if d.get("kind") == "storage" and d.get("spec"):
            s = get_storage(d["spec"])
            w = s.idle_power_w if s.idle_power_w is not None else s.active_power_w
            total += float(w or 0.0) * int(d.get("count", 1))
    return total


def component_power(graph, busy_share: Mapping[str, float], used: int | None = None
                    ) -> dict[str, float]:
    """Average IT power (W) of every component class of *graph* (:data:`COMPONENTS`) over a
    run in which compute device node *n* was busy ``busy_share[n]`` of the time. The run
    simulated only the devices in *busy_share*; *used* devices in all ran the job (a folded
    run's other ranks): the ones beyond the simulated run at the simulated devices' mean
    share, every other compute device idles."""
    out = dict.fromkeys(COMPONENTS, 0.0)
    shares = [min(max(float(s), 0.0), 1.0) for s in busy_share.values()]
    mean = float(np.mean(shares)) if shares else 0.0
    extra = max(0, int(used or 0) - len(busy_share))
    job_kinds = {graph.nodes[n].get("kind") for n in busy_share if n in graph.nodes}
    specs: dict[str, Any] = {}
    for n, d in graph.nodes(data=True):
        kind = d.get("kind")
        if kind not in ("gpu", "tpu", "cpu") or not d.get("spec"):
            continue
        spec = specs.get(d["spec"]) or specs.setdefault(d["spec"], device_spec(graph, d["spec"]))
        if n in busy_share:
            u = min(max(float(busy_share[n]), 0.0), 1.0)
        elif extra and kind in job_kinds:
            u, extra = mean, extra - 1
        else:
            u = 0.0
        out["cpu" if kind == "cpu" else "gpu"] += float(power_w(spec.idle_power_w, spec.busy_w, u))
    out["nic"], out["switch"] = _port_power(graph)
    out["storage"] = _storage_power(graph)
    return out


def power_summary(graph, busy_s: Mapping[str, float], wall_s: float, summary: Mapping[str, Any],
                  pue: float = 1.0) -> dict[str, Any]:
    """The power and energy summary keys of a run (docs/analysis.md, "Power") on *graph* that
    lasted *wall_s* seconds, its simulated compute devices busy *busy_s* seconds each, given the
    run's other *summary* keys (``devices``, throughput, ``time_to_train_s``)."""
    if not wall_s > 0:
        return {}
    # streams of emulated devices (a data-loader benchmark's accelerators) are not graph nodes
    shares = {n: b / wall_s for n, b in busy_s.items() if n in graph.nodes}
    parts = component_power(graph, shares, summary.get("devices"))
    it_w = sum(parts.values())
    fac_w = it_w * pue
    s: dict[str, Any] = {f"power_{k}_kw": v / 1e3 for k, v in parts.items()}
    s.update(power_it_kw=it_w / 1e3, pue=pue, power_avg_kw=fac_w / 1e3,
             energy_kwh=fac_w * wall_s / 3.6e6)
    gpus = [n for n in shares if graph.nodes[n].get("kind") in ("gpu", "tpu")]
    if gpus:
        specs = [device_spec(graph, graph.nodes[n]["spec"]) for n in gpus]
        s["gpu_power_w"] = float(np.mean([power_w(sp.idle_power_w, sp.busy_w, shares[n])
                                          for sp, n in zip(specs, gpus)]))
    busy = server_busy_power_w(graph)
    s["power_busy_kw"] = sum(busy.values()) / 1e3 + (parts["switch"] + _storage_shared(graph)) / 1e3
    s.update(per_unit_energy(fac_w, summary))
    return s


def per_unit_energy(watts: float, summary: Mapping[str, Any]) -> dict[str, float]:
    """The energy per unit of work of a job drawing *watts* (facility) whose summary keys are
    *summary*: per sample and token (training: a steady step; a data-loader benchmark: its
    sample rate), to train (its ``time_to_train_s``), per output token and request (serving)."""
    s: dict[str, float] = {}
    tokens, samples = summary.get("tokens_per_s"), summary.get("samples_per_s")
    if summary.get("step_time_s") and summary.get("global_batch"):  # training
        s["energy_per_sample_j"] = watts * summary["step_time_s"] / summary["global_batch"]
        if tokens:
            s["energy_per_token_j"] = watts / tokens
    elif samples and not summary.get("output_tokens_per_s"):
        s["energy_per_sample_j"] = watts / samples
    if summary.get("time_to_train_s"):
        s["energy_to_train_mwh"] = watts * summary["time_to_train_s"] / 3.6e9
    if summary.get("output_tokens_per_s"):  # serving
        s["energy_per_output_token_j"] = watts / summary["output_tokens_per_s"]
    if summary.get("requests_per_s"):
        s["energy_per_request_j"] = watts / summary["requests_per_s"]
    return s


def _storage_shared(graph) -> float:
    """Storage watts outside the servers (shared tiers), counted once in ``power_busy_kw``."""
    from hwsim.catalog import get_storage

    total = 0.0
    for _, d in graph.nodes(data=True):
        if d.get("kind") == "storage" and d.get("spec") and d.get("server") is None:
            s = get_storage(d["spec"])
            w = s.active_power_w if s.active_power_w is not None else s.idle_power_w
            total += float(w or 0.0) * int(d.get("count", 1))
    return total


def job_energy(graph, busy_s: Mapping[str, float], wall_s: float,
               held: list[tuple[str, tuple[str, ...]]], summary: Mapping[str, Any],
               jobs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each job's share of a shared run's energy (docs/analysis.md, "Power"):
    ``job.<name>.energy_kwh`` of every job in *held* ``(name, its devices)`` that holds devices.
    A job holds its devices for the whole run (hwsim.scenario.build_jobs): their energy over
    the run is its own (idle power throughout, plus the busy increment for the seconds they
    computed, *busy_s*; a device of a folded job that was not simulated at the job's simulated
    devices' mean); the rest of the run's IT energy (host CPUs, NICs, switches, storage, devices
    no job holds) is shared in proportion to the devices each job holds. Times the PUE, the
    jobs' energies add up to the run's ``energy_kwh``. With the job's mean power over the run,
    its energy per unit of work (:func:`per_unit_energy` of its own summary keys, *jobs*)."""
    if not wall_s > 0 or not summary.get("power_it_kw"):
        return {}
    own: dict[str, tuple[float, int]] = {}
    for name, devices in held:
        if not devices:
            continue
        sim = [min(busy_s[d], wall_s) for d in devices if d in busy_s]
        mean = float(np.mean(sim)) if sim else 0.0
        joules = 0.0
        for d in devices:
            sp = device_spec(graph, graph.nodes[d]["spec"])
            joules += energy_j(sp.idle_power_w, sp.busy_w, busy_s.get(d, mean) / wall_s, wall_s)
        own[name] = (joules, len(devices))
    if not own:
        return {}
    devices = sum(n for _, n in own.values())
    shared = summary["power_it_kw"] * 1e3 * wall_s - sum(j for j, _ in own.values())
    pue = float(summary.get("pue") or 1.0)
    out: dict[str, Any] = {}
    for name, (joules, n) in own.items():
        total = (joules + shared * n / devices) * pue
        out[f"job.{name}.energy_kwh"] = total / 3.6e6
        out.update({f"job.{name}.{k}": v for k, v in
                    per_unit_energy(total / wall_s, jobs.get(name) or {}).items()})
    return out
