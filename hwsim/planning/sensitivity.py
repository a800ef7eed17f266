"""What if one resource were faster or slower? A re-run, not a guess (DESIGN.md, "Bottleneck
attribution"; docs/analysis.md, "sensitivity").

The scenario is built as usual, then one class of resources (or one named resource) of its
graph is scaled before anything is planned on it, and the run is repeated:

- compute (``compute``, ``gpu``, ``tpu``, ``cpu``, or a device node id such as ``n0.gpu0``):
  the device's ``speed`` is multiplied by *factor*; every op of it takes ``1 / speed`` of its
  roofline time (both the compute and the memory-bandwidth bound), never less than the launch
  overhead (:meth:`hwsim.catalog.DeviceSpec.op_time_s`). Data-loader decode on the servers'
  threads is not scaled.
- links (a link class present in the graph, such as ``nvlink``, ``pcie``, ``infiniband``,
  ``ethernet``, ``wan``; ``links`` for all; or one link as ``a->b``, its two nodes): the
  edge's ``bw_bytes_per_s`` is multiplied by *factor* in both directions; latencies unchanged.
- storage (``storage`` for every tier, or a storage node id such as ``n0.nvme``): the tier's
  read and write channels (bandwidth, and with it the IOPS limit of small requests) are
  multiplied by *factor*; a shared tier's per-client limit is not.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import networkx as nx
import pandas as pd

from hwsim.analysis.compare import compare
from hwsim.exceptions import ScenarioError
from hwsim.topology import natural_key

if TYPE_CHECKING:
    from hwsim.analysis.result import Result

__all__ = ["sensitivity", "scale_resource", "HEADLINE_KEYS", "SENSITIVITY_COLUMNS"]

HEADLINE_KEYS = (
    "step_time_s", "samples_per_s", "tokens_per_s", "mfu", "time_to_train_s", "makespan_s",
    "accelerator_utilization", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s",
    "e2e_p50_s", "e2e_p99_s", "output_tokens_per_s", "requests_per_s", "slo_attainment",
    "bottleneck", "bottleneck_share")
"""The summary keys :func:`sensitivity` reports by default (those the baseline run has)."""
SENSITIVITY_COLUMNS = ("resource", "factor", "key", "baseline", "changed", "delta", "ratio")

_COMPUTE = ("gpu", "tpu", "cpu")


def _choices(g: nx.Graph) -> list[str]:
    kinds = sorted({d.get("kind") for _, d in g.nodes(data=True)} & set(_COMPUTE))
    classes = sorted({str(d.get("link_class")) for *_, d in g.edges(data=True)
                      if d.get("link_class")})
    storage = any(d.get("kind") == "storage" for _, d in g.nodes(data=True))
    return ["compute", *kinds, "links", *classes, *(["storage"] if storage else [])]


def scale_resource(g: nx.Graph, resource: str, factor: float) -> str:
    """Scale *resource* of graph *g* by *factor*, in place (see the module doc); returns what
    was scaled (``compute``, ``link`` or ``storage``). ScenarioError (field ``resource``)
    naming the valid choices for anything else, and for a factor that is not a positive
    number."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not (
            math.isfinite(factor) and factor > 0):
        raise ScenarioError(f"must be a positive number, got {factor!r}", field="factor")
    name = str(resource)
    nodes = g.nodes
    if name == "compute" or name in _COMPUTE or (
            name in nodes and nodes[name].get("kind") in _COMPUTE):
        picked = [n for n, d in nodes(data=True) if d.get("kind") in _COMPUTE and (
            name in ("compute", n) or d.get("kind") == name)]
        if picked:
            for n in picked:
                nodes[n]["speed"] = float(nodes[n].get("speed", 1.0)) * factor
            return "compute"
    classes = {str(d.get("link_class")) for *_, d in g.edges(data=True)}
    edges: list[tuple] = []
    if name == "links" or name in classes:
        edges = [(u, v) for u, v, d in g.edges(data=True)
                 if name == "links" or str(d.get("link_class")) == name]
    elif "->" in name:
        a, b = name.split("->", 1)
        if g.has_edge(a, b):
            edges = [(a, b)]
    if edges:
        for u, v in edges:
            g.edges[u, v]["bw_bytes_per_s"] *= factor
        return "link"
    if name == "storage" or (name in nodes and nodes[name].get("kind") == "storage"):
        picked = [n for n, d in nodes(data=True) if d.get("kind") == "storage"
                  and name in ("storage", n)]
        if picked:
            for n in picked:
                for key in ("read_bw_bytes_per_s", "write_bw_bytes_per_s", "read_iops",
                            "write_iops"):
                    if key in nodes[n]:
                        nodes[n][key] *= factor
            return "storage"
    devices = sorted((n for n, d in nodes(data=True) if d.get("kind") in _COMPUTE
                      or d.get("kind") == "storage"), key=natural_key)
    u, v = next(iter(g.edges)) if g.number_of_edges() else ("a", "b")
    raise ScenarioError(
        f"no resource {name!r} in this cluster; valid: a class ({', '.join(_choices(g))}), a "
        f"compute or storage node id ({', '.join(devices[:3])}{' ...' if len(devices) > 3 else ''}"
        f") or a link as 'a->b' (e.g. {u}->{v})", field="resource")


def sensitivity(run: Callable[[Callable[[nx.Graph], Any] | None], Result], resource: str,
                factor: float, *, graph: nx.Graph | None = None,
                keys: list[str] | None = None) -> pd.DataFrame:
    """Run a scenario twice, as it is and with *resource* scaled by *factor* (2.0: twice as
    fast; 0.5: half), and report the change of its headline keys. Users call
    :func:`hwsim.sensitivity` (a scenario file in); this is the layer below it, which knows no
    scenario format.

    Parameters
    ----------
    run : callable
        ``run(adjust)`` runs the scenario, calling ``adjust(graph)`` on its built graph before
        anything is planned on it when *adjust* is not None, and returns the Result.
    resource : str
        A class (``compute``, ``gpu``, ``tpu``, ``cpu``, ``links``, a link class such as
        ``nvlink`` or ``ethernet``, ``storage``) or one resource (a compute or storage node id,
        a link ``a->b``); see the module doc for what is scaled.
    factor : float
        The multiplier, > 0.
    graph : networkx.Graph, optional
        A built graph of the scenario (scaled in place): *resource* and *factor* are checked on
        it before anything runs.
    keys : list of str, optional
        Summary keys to report (default: those of :data:`HEADLINE_KEYS` the baseline has).

    Returns
    -------
    pandas.DataFrame
        :data:`SENSITIVITY_COLUMNS`: ``resource`` and ``factor`` (as given), ``key``,
        ``baseline`` and ``changed`` (the two runs' values), ``delta`` = changed - baseline and
        ``ratio`` = changed / baseline for numbers (NaN for text such as ``bottleneck``).

    Raises
    ------
    ScenarioError
        An unknown *resource* (the message lists the valid ones, field ``resource``) or a
        *factor* that is not a positive number (field ``factor``).
    """
    if graph is not None:
        scale_resource(graph, resource, factor)
    base = run(None)
    changed = run(lambda g: scale_resource(g, resource, factor))
    wanted = keys if keys is not None else [k for k in HEADLINE_KEYS if k in base.summary]
    out = compare(base, changed, keys=wanted, bottleneck_shares=False).rename(
        columns={"a": "baseline", "b": "changed"})
    out.insert(0, "factor", float(factor))
    out.insert(0, "resource", str(resource))
    return out[list(SENSITIVITY_COLUMNS)]
