"""The cluster half of the scenario schema, and the quantity types both halves share.

Every model forbids unknown keys and is frozen after validation (:class:`StrictModel`). Quantities
may be written as SI numbers or as strings with units (``"10 TB"``, ``"25 GB/s"``, ``"1.5 us"``);
:data:`Size`, :data:`Duration` and :data:`Bandwidth` convert them once, here, with
:func:`hwsim.units.parse_quantity`. Catalog ids stay strings; :func:`hwsim.scenario.load_scenario`
checks them against the catalog after this validation. Re-exported by :mod:`hwsim.scenario.schema`.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      model_validator)

from hwsim.units import UnitError, parse_quantity

__all__ = [
    "StrictModel", "Size", "Duration", "Bandwidth", "PosInt", "Count", "INT_MAX", "Cluster",
    "NodeSpec", "Fabric",
    "StorageEntry", "Site", "WanLink", "ExplicitGraph", "GraphNode", "GraphLink", "NodeGroup",
    "Straggler", "DegradedLink", "did_you_mean",
]


def _quantity(dimension: str) -> BeforeValidator:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        try:
            return parse_quantity(value, dimension)
        except UnitError as err:
            raise ValueError(str(err)) from None
    return BeforeValidator(convert)


Size = Annotated[float, _quantity("bytes"), Field(gt=0)]
"""Bytes, > 0: a number or a string such as ``"4 KiB"`` or ``"10 TB"``."""
Duration = Annotated[float, _quantity("time"), Field(ge=0)]
"""Seconds, >= 0: a number or a string such as ``"1.5 us"`` or ``"2 h"``."""
Bandwidth = Annotated[float, _quantity("bytes_per_s"), Field(gt=0)]
"""Bytes per second, > 0: a number or a string such as ``"25 GB/s"`` or ``"200 Gb/s"``."""
INT_MAX = 2**63 - 1
"""The largest integer a scenario field takes: what numpy's int64, parquet and the seed of
``numpy.random.default_rng`` all hold."""


def _int64(value: int) -> int:
    if not -INT_MAX - 1 <= value <= INT_MAX:
        raise ValueError(f"{value:.3g} is beyond the largest integer hwsim takes (2^63 - 1 = "
                         f"{INT_MAX}); valid: a smaller whole number")
    return value


Count = Annotated[int, Field(ge=0), AfterValidator(_int64)]
"""A whole number >= 0 below 2^63."""
PosInt = Annotated[int, Field(ge=1), AfterValidator(_int64)]
"""A whole number >= 1 below 2^63."""


def did_you_mean(word: object, choices: Any) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of *choices* to *word*, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class StrictModel(BaseModel):
    """Base of every scenario model: unknown keys are errors; instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSpec(StrictModel):
    """One server: accelerators (``gpu`` or ``tpu``, a catalog device id), CPU sockets, links,
    NICs, local storage and host memory (catalog ids)."""

    gpu: str | None = None
    tpu: str | None = None
    gpus_per_node: Count = 0
    cpu: str = "EPYC-7742"
    cpu_sockets: PosInt = 2
    intra_node: str | None = None
    host_link: str | None = None  # None: the accelerator's catalog host_link, else the CPU's
    nic: str | None = None
    nics_per_node: Count = 0
    local_storage: str | None = None
    host_memory: str = "ddr4-host"

    @model_validator(mode="after")
    def _accelerators(self) -> NodeSpec:
        if self.gpu is not None and self.tpu is not None:
            raise ValueError("gpu and tpu are mutually exclusive; give one of them")
        if (self.gpu or self.tpu) and self.gpus_per_node < 1:
            raise ValueError("gpus_per_node: must be >= 1 when gpu or tpu is set "
                             "(e.g. gpus_per_node: 8)")
        if not (self.gpu or self.tpu) and self.gpus_per_node:
            raise ValueError(f"gpus_per_node: is {self.gpus_per_node} but neither gpu nor tpu "
                             "is set")
        if self.nic is None and self.nics_per_node:
            raise ValueError(f"nics_per_node: is {self.nics_per_node} but no nic is set")
        return self


class Fabric(StrictModel):
    """The network joining the nodes of a cluster (or of one site)."""

    topology: Literal["fat-tree", "rail-optimized", "dragonfly", "torus",
                      "single-switch"] = "single-switch"
    oversubscription: Annotated[float, Field(ge=1)] | Annotated[
        list[Annotated[float, Field(ge=1)]], Field(min_length=1, max_length=2)] = 1.0
    link: str | None = None
    leaf_radix: Annotated[int, Field(ge=2), AfterValidator(_int64)] | None = None
    planes: PosInt | None = None
    group_routers: PosInt | None = None
    ecmp_seed: Annotated[int, Field(ge=0), AfterValidator(_int64)] | None = None
    dims: list[PosInt] | None = None
    slices: PosInt | None = None

    @model_validator(mode="after")
    def _dims(self) -> Fabric:
        if self.dims is not None and self.topology != "torus":
            raise ValueError(f"dims: applies only to topology 'torus', not {self.topology!r}")
        return self


class StorageEntry(StrictModel):
    """A shared storage tier: ``tier`` is a catalog storage id, ``count`` its volumes, ``link``
    its network link id, ``links`` how many such links join it to the fabric (default
    ``count``)."""

    name: str = Field(min_length=1)
    tier: str
    count: PosInt = 1
    link: str | None = None
    links: PosInt | None = None


def _unique(names: list[str], what: str) -> None:
    seen = {n for n in names if names.count(n) > 1}
    if seen:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(sorted(seen))}")


class NodeGroup(StrictModel):
    """Identical servers of one kind in a mixed cluster: ``nodes`` servers of ``node``."""

    name: str = Field(min_length=1, pattern=r"^[^/]+$")
    nodes: PosInt = 1
    node: NodeSpec


def _nodes_or_groups(model: Any) -> None:
    """``node`` (with ``nodes``) or ``groups``, exactly one of them."""
    if model.groups is not None and (model.node is not None
                                     or "nodes" in model.model_fields_set):
        raise ValueError("groups replaces nodes and node; give either groups (a list of "
                         "{name, nodes, node}) or nodes and node")
    if model.groups is None and model.node is None:
        raise ValueError("node is required in the builder form (e.g. node: {gpu: "
                         "A100-SXM4-80GB, gpus_per_node: 8}), or groups of different nodes "
                         "(groups: [{name: a100, nodes: 2, node: {...}}, ...])")
    if model.groups is not None:
        _unique([g.name for g in model.groups], "group names")


class Site(StrictModel):
    """One site of a multi-site cluster: the builder form (``nodes`` and ``node``, or
    ``groups``) plus a ``name``."""

    name: str = Field(min_length=1)
    nodes: PosInt = 1
    node: NodeSpec | None = None
    groups: list[NodeGroup] | None = Field(None, min_length=1)
    fabric: Fabric = Fabric()
    storage: list[StorageEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _form(self) -> Site:
        _nodes_or_groups(self)
        return self


class WanLink(StrictModel):
    """A wide-area link between sites ``a`` and ``b`` (``count`` parallel links)."""

    a: str
    b: str
    link: str = "wan-10g"
    count: PosInt = 1


class Straggler(StrictModel):
    """A compute device that runs slower than its datasheet: every op takes ``1 / speed`` of
    its roofline time on it."""

    device: str = Field(min_length=1)
    speed: float = Field(gt=0, le=1)


class DegradedLink(StrictModel):
    """A link (graph edge between nodes ``a`` and ``b``) running at ``factor`` of its
    bandwidth, in both directions."""

    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    factor: float = Field(gt=0, le=1)


class GraphNode(StrictModel):
    """A node of an explicit graph; ``spec`` is a catalog id where the kind has one."""

    id: str = Field(min_length=1)
    kind: Literal["gpu", "tpu", "cpu", "memory", "storage", "nvswitch", "pcie_switch", "nic",
                  "switch", "router"]
    spec: str | None = None
    server: Count | None = None


class GraphLink(StrictModel):
    """A link of an explicit graph; ``bw`` and ``latency`` override the catalog link's figures."""

    a: str
    b: str
    link: str
    count: PosInt = 1
    bw: Bandwidth | None = None
    latency: Duration | None = None


class ExplicitGraph(StrictModel):
    """A cluster given node by node and link by link."""

    nodes: list[GraphNode] = Field(min_length=1)
    links: list[GraphLink] = Field(default_factory=list)

    @model_validator(mode="after")
    def _endpoints(self) -> ExplicitGraph:
        ids = [n.id for n in self.nodes]
        _unique(ids, "graph node ids")
        known = set(ids)
        for i, link in enumerate(self.links):
            for end in ("a", "b"):
                node = getattr(link, end)
                if node not in known:
                    some = ", ".join(ids[:6]) + (", ..." if len(ids) > 6 else "")
                    raise ValueError(f"links[{i}].{end}: unknown node id {node!r}; declared ids "
                                     f"include: {some}{did_you_mean(node, ids)}")
        return self


_FORMS = {"builder": ("nodes", "node", "groups", "fabric", "storage"), "sites": ("sites", "wan"),
          "graph": ("graph",)}


class Cluster(StrictModel):
    """The hardware, in exactly one of three forms: builder (``nodes`` and ``node``, or
    ``groups`` of different nodes; ``fabric``, ``storage``), multi-site (``sites``, ``wan``) or
    explicit (``graph``). In the builder form ``fabric`` is always set, and ``nodes`` (default
    1) unless ``groups`` is; in the others they are None. ``stragglers`` and ``degraded_links``
    apply to any form; their ids are checked against the built graph
    (:func:`hwsim.topology.degrade`)."""

    nodes: PosInt | None = None
    node: NodeSpec | None = None
    groups: list[NodeGroup] | None = Field(None, min_length=1)
    fabric: Fabric | None = None
    storage: list[StorageEntry] = Field(default_factory=list)
    sites: list[Site] | None = Field(None, min_length=2)
    wan: list[WanLink] | None = Field(None, min_length=1)
    graph: ExplicitGraph | None = None
    stragglers: list[Straggler] = Field(default_factory=list)
    degraded_links: list[DegradedLink] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        given = {k for k, v in data.items() if v is not None and not (k == "storage" and v == [])}
        used = {form: [k for k in keys if k in given] for form, keys in _FORMS.items()}
        used = {form: keys for form, keys in used.items() if keys}
        if len(used) > 1:
            mixed = "; ".join(f"{form}: {', '.join(keys)}" for form, keys in used.items())
            raise ValueError(f"mixes forms ({mixed}); use exactly one of: builder (nodes, "
                             "node, fabric, storage), multi-site (sites, wan) or explicit (graph)")
        if not used and set(data) <= set(cls.model_fields):
            raise ValueError("no form given; use exactly one of: builder (node: {gpu: "
                             "A100-SXM4-80GB, gpus_per_node: 8}), multi-site (sites, wan) or "
                             "explicit (graph)")
        if "sites" in used and "wan" not in given:
            raise ValueError("sites needs wan: a list of links between sites ({a, b, link})")
        if "sites" in used and "sites" not in given:
            raise ValueError("wan needs sites: a list of at least two sites")
        if "builder" in used:
            data = {**data, "fabric": {} if data.get("fabric") is None else data["fabric"]}
            if "groups" not in given:
                data["nodes"] = 1 if data.get("nodes") is None else data["nodes"]
        return data

    @model_validator(mode="after")
    def _sites(self) -> Cluster:
        if self.form == "builder":
            _nodes_or_groups(self)
        for entries, what in ([(self.storage, "storage names")]
                              + [(s.storage, f"site {s.name!r} storage names")
                                 for s in self.sites or []]):
            _unique([e.name for e in entries], what)
        if self.sites is not None:
            names = [s.name for s in self.sites]
            _unique(names, "site names")
            for i, w in enumerate(self.wan or []):
                for end in ("a", "b"):
                    site = getattr(w, end)
                    if site not in names:
                        raise ValueError(f"wan[{i}].{end}: unknown site {site!r}; sites: "
                                         f"{', '.join(names)}{did_you_mean(site, names)}")
        return self

    def node_specs(self) -> list[NodeSpec]:
        """Every kind of server in the builder and multi-site forms (none in the explicit)."""
        parts = [self] if self.form == "builder" else list(self.sites or [])
        return [n for p in parts for n in ([p.node] if p.node is not None else
                                           [g.node for g in p.groups or []])]

    @property
    def form(self) -> Literal["builder", "sites", "graph"]:
        """Which of the three forms this cluster uses."""
        if self.graph is not None:
            return "graph"
        return "sites" if self.sites is not None else "builder"
