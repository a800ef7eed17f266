"""What every serving job does at its front door: take requests as they arrive, hand each to a
replica's queue, count what is in the system, and wake an idle replica."""

from __future__ import annotations

from typing import Any, Callable, Generator, Sequence

import simpy

__all__ = ["Front"]


class Front:
    """Arrival bookkeeping shared by :class:`~hwsim.jobs.serving.ServingJob` and
    :class:`~hwsim.jobs.batching.BatchingJob`. A replica has ``waiting`` (a deque), ``wake``
    (an event while idle, else None) and ``index``. After a run, ``seqs`` holds every request's
    record and ``in_system`` the ``(time, requests arrived and not finished)`` changes."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.seqs: list[Any] = []
        self.in_system: list[tuple[float, int]] = []
        self._count = 0
        self._rr = 0

    @property
    def finished(self) -> int:
        """Requests finished so far (arrived and left)."""
        return len(self.seqs) - self._count

    def _round_robin(self, replicas: Sequence[Any]) -> Any:
        r = replicas[self._rr % len(replicas)]
        self._rr += 1
        return r

    def _enqueue(self, seq: Any, replica: Any) -> Any:
        """*seq* joins *replica*'s queue now."""
        self.seqs.append(seq)
        replica.waiting.append(seq)
        self._count += 1
        self.in_system.append((self.env.now, self._count))
        if replica.wake is not None and not replica.wake.triggered:
            replica.wake.succeed()
        return seq

    def _leave(self) -> None:
        """A request has finished."""
        self._count -= 1
        self.in_system.append((self.env.now, self._count))

    def _open_loop(self, requests: Sequence[Any], send: Callable[[Any], Any]) -> Generator:
        """SimPy process body: ``send`` each request at its ``arrival_s``."""
        env = self.env
        for req in requests:
            if req.arrival_s > env.now:
                yield env.timeout(req.arrival_s - env.now)
            send(req)

    def _idle(self, replica: Any, total: int) -> Generator:
        """SimPy sub-process of an idle replica: wait to be woken; its value is False, at once,
        when all *total* requests are done (the replica stops)."""
        if self._count == 0 and len(self.seqs) == total:
            return False
        replica.wake = self.env.event()
        yield replica.wake
        replica.wake = None
        return True
