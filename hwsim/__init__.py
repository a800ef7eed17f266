"""hwsim: how long will this deep-learning job take on this hardware, what does it cost, and where is
the bottleneck? A discrete-event simulator over a networkx graph of devices, memories, storage and
links."""

from __future__ import annotations

__version__ = "0.1.0"
