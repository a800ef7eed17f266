"""Byte pools: device memory, host memory, storage capacity.

A pool tracks bytes in use by label (weights, gradients, dataset...) and its peak. Allocation
beyond capacity raises :class:`OutOfCapacity` (an ``InfeasibleError``) carrying the breakdown, so
that a job can report "does not fit" as a result instead of crashing.
"""

from __future__ import annotations

from hwsim.engine.recorder import Recorder
from hwsim.exceptions import InfeasibleError

__all__ = ["Pool", "OutOfCapacity"]


class OutOfCapacity(InfeasibleError):
    """An allocation that does not fit; ``needed_bytes``, ``capacity_bytes`` and ``breakdown``
    (label -> bytes, including the failed request) say by how much."""

    def __init__(self, resource: str, needed: float, capacity: float,
                 breakdown: dict[str, float]) -> None:
        self.resource = resource
        self.needed_bytes = needed
        self.capacity_bytes = capacity
        self.breakdown = dict(breakdown)
        parts = ", ".join(f"{k} {v / 1e9:.3g} GB" for k, v in breakdown.items())
        super().__init__(f"{resource}: does not fit: {needed / 1e9:.4g} GB needed of "
                         f"{capacity / 1e9:.4g} GB ({parts})")


class Pool:
    """Bytes of capacity, allocated and freed by label. Levels go to the recorder with the time
    read from *clock* (a zero-argument callable, e.g. ``lambda: env.now``)."""

    def __init__(self, resource: str, capacity_bytes: float, recorder: Recorder | None = None,
                 clock=lambda: 0.0) -> None:
        if not capacity_bytes > 0:
            raise ValueError(f"pool {resource!r}: capacity_bytes(={capacity_bytes}) must be > 0")
        self.resource = resource
        self.capacity_bytes = float(capacity_bytes)
        self.used_bytes = 0.0
        self.peak_bytes = 0.0
        self.by_label: dict[str, float] = {}
        self._recorder = recorder
        self._clock = clock

    @property
    def free_bytes(self) -> float:
        return self.capacity_bytes - self.used_bytes

    def fits(self, nbytes: float) -> bool:
        return self.used_bytes + nbytes <= self.capacity_bytes * (1 + 1e-12)

    def allocate(self, nbytes: float, label: str = "other") -> None:
        """Take *nbytes*; raise :class:`OutOfCapacity` (nothing taken) if they do not fit."""
        if nbytes < 0:
            raise ValueError(f"nbytes(={nbytes}) must be >= 0")
        if not self.fits(nbytes):
            breakdown = dict(self.by_label)
            breakdown[label] = breakdown.get(label, 0.0) + nbytes
            raise OutOfCapacity(self.resource, self.used_bytes + nbytes, self.capacity_bytes,
                                breakdown)
        self._change(nbytes, label)

    def free(self, nbytes: float, label: str = "other") -> None:
        """Return *nbytes* of *label*; raise ValueError if more than allocated under it."""
        have = self.by_label.get(label, 0.0)
        if nbytes > have * (1 + 1e-12) + 1e-6:
            raise ValueError(f"pool {self.resource!r}: freeing {nbytes} bytes of {label!r}, "
                             f"only {have} allocated")
        self._change(-min(nbytes, have), label)

    def _change(self, delta: float, label: str) -> None:
        self.by_label[label] = self.by_label.get(label, 0.0) + delta
        self.used_bytes += delta
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)
        if self._recorder is not None:
            self._recorder.mem(self._clock(), self.resource, self.used_bytes, self.capacity_bytes)
