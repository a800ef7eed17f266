"""nccl-tests output (``all_reduce_perf`` and its siblings) read, simulated and fitted.

The format is nccl-tests' own (github.com/NVIDIA/nccl-tests, ``src/common.cu`` print_header and
the README's sample): ``#`` header lines, among them one ``#  Rank  N Group G Pid P on HOST
device D [...] NAME`` line per rank, the column header ``size count type redop root time algbw
busbw #wrong time algbw busbw #wrong`` (out-of-place, then in-place; older versions have no
``root`` column and ``error`` instead of ``#wrong``), then one row per message size, times in
microseconds and bandwidths in GB/s. Which collective a file holds is read from the
``# Collective test starting: all_reduce_perf`` line of recent versions, else from the file
name (``all_reduce_perf...``), else it must be given.

:func:`fit_links` fits the efficiency and the latency of the link the collective is bound by (the
one whose efficiency moves the largest message's time most) to the measured times, each row's
time being the mean of its out-of-place and in-place columns.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import networkx as nx

from hwsim.exceptions import ScenarioError
from hwsim.scenario.calibration import Key, apply, current
from hwsim.simulation import collective_time
from hwsim.topology import natural_key

__all__ = ["NcclTable", "read_nccl_tests", "parse_nccl_tests", "OPS", "links_crossed",
           "bound_link", "predict_time"]

OPS = {"all_reduce": "allreduce", "all_gather": "allgather", "reduce_scatter": "reduce_scatter",
       "alltoall": "alltoall", "broadcast": "broadcast", "sendrecv": "sendrecv"}
"""nccl-tests binary stem (``all_reduce`` of ``all_reduce_perf``) -> hwsim collective."""
_RANK = re.compile(r"^#\s*Rank\s+(\d+)\s+Group\s+\d+\s+Pid\s+\d+\s+on\s+(\S+)\s+device\s+(\d+)"
                   r"(?:\s+\[[^\]]*\])?\s*(.*)$")
_EXAMPLE = ("#       size         count      type   redop    root     time   algbw   busbw #wrong"
            "     time   algbw   busbw #wrong")


@dataclass
class NcclTable:
    """One nccl-tests run: the collective, its ranks' hosts and GPU names, and per message size
    the measured time (s, mean of out-of-place and in-place) and bus bandwidth (GB/s)."""

    file: str
    op: str
    hosts: list[str]
    gpu_names: list[str]
    sizes: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    busbw: list[float] = field(default_factory=list)

    @property
    def ranks(self) -> int:
        return len(self.hosts)

    @property
    def nodes(self) -> int:
        return len(dict.fromkeys(self.hosts))


def read_nccl_tests(path: str | Path, op: str | None = None) -> NcclTable:
    """The :class:`NcclTable` of the nccl-tests output file *path* (*op*: the hwsim collective
    when the file does not say)."""
    p = Path(path)
    if not p.is_file():
        raise ScenarioError("no such nccl-tests output file (the text all_reduce_perf and its "
                            "siblings print)", file=str(p))
    return parse_nccl_tests(p.read_text(encoding="utf-8", errors="replace"), file=str(p), op=op)


def _op_of(text: str, file: str, op: str | None) -> str:
    if op is not None:
        if op not in OPS.values():
            raise ScenarioError(f"unknown collective {op!r}; valid: {', '.join(OPS.values())}",
                                file=file, field="op")
        return op
    m = re.search(r"Collective test starting:\s*(\w+?)_perf", text)
    stem = m.group(1) if m else next((s for s in OPS if s in Path(file).name), None)
    if stem is None or stem not in OPS:
        raise ScenarioError("the output does not say which collective it measured (no "
                            "'# Collective test starting: X_perf' line, and the file name names "
                            "none of " + ", ".join(f"{s}_perf" for s in OPS) + "); valid: name "
                            "the file after the binary (all_reduce_perf.txt) or give the "
                            "collective (--nccl-op allreduce)", file=file)
    return OPS[stem]


def parse_nccl_tests(text: str, file: str = "<nccl-tests>", op: str | None = None) -> NcclTable:
    """Parse nccl-tests output *text* (see the module doc)."""
    hosts, names, header = [], [], None
    rows: list[list[str]] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        m = _RANK.match(s)
        if m:
            hosts.append(m.group(2))
            names.append(m.group(4).strip())
            continue
        if s.startswith("#"):
            words = s.lstrip("#").split()
            if words[:2] == ["size", "count"] and "time" in words and "busbw" in words:
                header = words
            continue
        if header is not None and s.split()[0].isdigit():
            rows.append(s.split())
    if header is None:
        raise ScenarioError("no nccl-tests table found: expected a column header line like "
                            f"'{_EXAMPLE.strip()}' followed by one row per message size",
                            file=file)
    if not hosts:
        raise ScenarioError("no '#  Rank N Group G Pid P on HOST device D ...' lines: nccl-tests "
                            "prints one per rank under '# Using devices'; valid: the whole output, "
                            "header included", file=file)
    table = NcclTable(file, _op_of(text, file, op), hosts, names)
    times = [i for i, w in enumerate(header) if w == "time"]
    bws = [i for i, w in enumerate(header) if w == "busbw"]
    for n, words in enumerate(rows, 1):
        if len(words) < len(header) - 1:  # in-place #wrong may be missing on sendrecv rows
            raise ScenarioError(f"row {n} ({' '.join(words)!r}) has {len(words)} columns, the "
                                f"header {len(header)}: {' '.join(header)}", file=file)
        try:
            size = float(words[0])
            ts = [float(words[i]) * 1e-6 for i in times if i < len(words)
                  and _number(words[i])]
            bw = [float(words[i]) for i in bws if i < len(words) and _number(words[i])]
        except ValueError:
            ts = []
        if not ts or size <= 0 or any(t <= 0 for t in ts):
            if size == 0:
                continue
            raise ScenarioError(f"row {n} ({' '.join(words)!r}) has no positive time in the "
                                f"time columns of the header ({' '.join(header)})", file=file)
        table.sizes.append(size)
        table.times_s.append(sum(ts) / len(ts))
        table.busbw.append(sum(bw) / len(bw) if bw else math.nan)
    if not table.sizes:
        raise ScenarioError("the nccl-tests table has no rows (one per message size under the "
                            f"column header '{_EXAMPLE.strip()}')", file=file)
    return table


def _number(word: str) -> bool:
    try:
        return math.isfinite(float(word))
    except ValueError:
        return False


def devices_for(graph: nx.Graph, table: NcclTable, file: str, field: str) -> list[str]:
    """The table's ranks on *graph*: the first ``ranks / nodes`` GPUs of each of its first
    ``nodes`` servers (nccl-tests fills its hosts alike)."""
    per_node = table.ranks // table.nodes
    servers: dict = {}
    for n, d in graph.nodes(data=True):
        if d.get("kind") == "gpu":
            servers.setdefault((d.get("site"), d.get("server")), []).append(n)
    groups = sorted((sorted(v, key=natural_key) for v in servers.values()),
                    key=lambda g: natural_key(g[0]))
    if table.ranks % table.nodes or len(groups) < table.nodes or any(
            len(g) < per_node for g in groups[:table.nodes]):
        have = f"{len(groups)} server(s) of {min((len(g) for g in groups), default=0)}+ GPUs"
        raise ScenarioError(f"{table.file} ran on {table.nodes} host(s) x {per_node} GPUs "
                            f"({table.ranks} ranks) but the scenario's cluster has {have}; "
                            "valid: a scenario whose cluster has at least those servers and GPUs",
                            file=file, field=field)
    return [d for g in groups[:table.nodes] for d in g[:per_node]]


def links_crossed(graph: nx.Graph, devices: Sequence[str]) -> list[str]:
    """Link ids on the shortest paths from the first device to every other one."""
    ids: list[str] = []
    for d in devices[1:]:
        path = nx.shortest_path(graph, devices[0], d)
        for u, v in zip(path, path[1:]):
            link = graph.edges[u, v].get("link")
            if link and link not in ids:
                ids.append(link)
    return ids


def predict_time(graph: nx.Graph, table: NcclTable, devices: Sequence[str], size: float,
                 overrides: Mapping[Key, float], algorithm: str = "auto") -> float:
    """Simulated time (s) of one row of *table* on a copy of *graph* with *overrides*."""
    g = apply(graph.copy(), overrides) if overrides else graph
    return collective_time(g, table.op, devices, size, algorithm=algorithm)[0]


def bound_link(graph: nx.Graph, table: NcclTable, devices: Sequence[str],
               base: Mapping[Key, float], algorithm: str = "auto") -> str:
    """The link id whose efficiency moves the largest message's simulated time most."""
    size = max(table.sizes)
    t0 = predict_time(graph, table, devices, size, base, algorithm)
    best, gain = None, 0.0
    for link in links_crossed(graph, devices):
        key = ("link", link, "efficiency")
        t = predict_time(graph, table, devices, size, {**base, key: 0.9 * current(key, base)},
                         algorithm)
        if t / t0 - 1 > gain:
            best, gain = link, t / t0 - 1
    if best is None:
        raise ScenarioError(f"no link's efficiency changes the simulated {table.op} of "
                            f"{size:.0f} bytes on the scenario's cluster, so this output "
                            "determines no link constant", file=table.file)
    return best



def busbw_factor(op: str, n: int) -> float:
    """Bus bandwidth over algorithm bandwidth, as nccl-tests computes it (its
    ``doc/PERFORMANCE.md``)."""
    return {"allreduce": 2 * (n - 1) / n, "allgather": (n - 1) / n,
            "reduce_scatter": (n - 1) / n, "alltoall": (n - 1) / n}.get(op, 1.0)


def format_nccl_tests(op: str, hosts: Sequence[str], gpu_name: str, sizes: Sequence[float],
                      times_s: Sequence[float]) -> str:
    """nccl-tests output text of *op* (as its ``src/common.cu`` prints it: the ``# Using
    devices`` rank lines, the two-part column header, one row per size, float elements, the
    same time out-of-place and in-place) with the given per-size times: what
    :func:`parse_nccl_tests` reads back. For writing a simulated run in the measured format."""
    stem = next(k for k, v in OPS.items() if v == op)
    n = len(hosts)
    redop = "sum" if op in ("allreduce", "reduce_scatter") else "none"
    lines = [f"# Collective test starting: {stem}_perf",
             f"# nThread 1 nGpus 1 minBytes {int(min(sizes))} maxBytes {int(max(sizes))} "
             "step: 4(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: 0",
             "#", "# Using devices"]
    local: dict[str, int] = {}
    for r, h in enumerate(hosts):
        d = local[h] = local.get(h, -1) + 1
        lines.append(f"#  Rank {r:2d} Group  0 Pid {1000 + r:6d} on {h:>10} device {d:2d} "
                     f"[0x{d:02x}] {gpu_name}")
    lines += ["#", "#" + " " * 62 + "out-of-place" + " " * 23 + "in-place",
              _EXAMPLE,
              "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)"
              "            (us)  (GB/s)  (GB/s)"]
    for size, t in zip(sizes, times_s):
        us, alg = t * 1e6, size / t / 1e9
        bus = alg * busbw_factor(op, n)
        cols = f"{us:8.2f} {alg:7.2f} {bus:7.2f} {0:6d}"
        lines.append(f"{int(size):12d} {int(size) // 4:13d} {'float':>9} {redop:>7} {-1:7d} "
                     f"{cols} {cols}")
    mean = sum(size / t / 1e9 * busbw_factor(op, n) for size, t in zip(sizes, times_s))
    lines += ["# Out of bounds values : 0 OK", f"# Avg bus bandwidth    : {mean / len(sizes):.4f}",
              "#", ""]
    return "\n".join(lines)
