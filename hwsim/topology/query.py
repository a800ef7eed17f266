"""Questions about a built graph that jobs and the front ask: natural ordering of node names,
and the node of a kind that serves a given node on its server."""

from __future__ import annotations

import re

import networkx as nx

__all__ = ["natural_key", "server_peer", "nodes_of_kind"]


def natural_key(name: str) -> tuple:
    """Sort key that orders ``n2.gpu10`` after ``n2.gpu9`` (numbers compared as numbers)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def nodes_of_kind(G: nx.Graph, kind: str) -> list[str]:
    """Nodes whose ``kind`` attribute is *kind*, in natural order."""
    return sorted((n for n, d in G.nodes(data=True) if d.get("kind") == kind), key=natural_key)


def server_peer(G: nx.Graph, node: str, kind: str) -> str | None:
    """The first node (natural order) of *kind* on the same server and site as *node*, or None."""
    d = G.nodes[node]
    peers = [n for n, e in G.nodes(data=True) if e.get("kind") == kind
             and e.get("server") == d.get("server") and e.get("site") == d.get("site")]
    return min(peers, key=natural_key) if peers else None
