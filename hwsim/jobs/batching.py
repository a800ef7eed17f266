"""Classic model serving with dynamic batching (Triton / TorchServe style) as SimPy processes:
requests for one forward pass each (an image, a sentence, a recommendation query) queue at a
replica (one device), which runs a batch as soon as it holds ``max_batch_size`` requests or its
oldest request has waited ``max_queue_delay_s``, whichever comes first, and the device is free.
A batch's time is the roofline of the model's forward ops at that batch size
(:func:`~hwsim.workloads.model_ops`), memoised per size. A request's first (and only) output is
its response: TTFT = end-to-end latency.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generator

import simpy

from hwsim.catalog.stacks import load_stacks
from hwsim.jobs.front import Front
from hwsim.jobs.system import System
from hwsim.workloads.arrivals import Request

__all__ = ["BatchingPlan", "BatchingJob"]


@dataclass(frozen=True)
class BatchingPlan:
    """``forward(b)`` gives the forward ops of a batch of *b* requests; ``weight_bytes`` the
    model's parameters in device memory; ``replicas`` one device each."""

    job: str
    forward: Callable
    weight_bytes: float
    replicas: tuple[str, ...]
    precision: str
    requests: tuple[Request, ...]
    max_batch_size: int = 32
    max_queue_delay_s: float = 0.0
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    router: str = "round_robin"


@dataclass
class _Req:
    req: Request
    replica: int
    start_s: float = math.nan
    first_token_s: float = math.nan
    end_s: float = math.nan
    preemptions: int = 0


@dataclass
class _Rep:
    index: int
    device: str
    waiting: deque = field(default_factory=deque)
    wake: simpy.Event | None = None
    batch_tokens: list = field(default_factory=list)
    blocks_total: int = 0


class BatchingJob(Front):
    """Runs a :class:`BatchingPlan`; the result fields mirror
    :class:`~hwsim.jobs.serving.ServingJob` so one summary serves both."""

    def __init__(self, system: System, plan: BatchingPlan) -> None:
        super().__init__(system.env)
        self.system, self.plan = system, plan
        self.replicas = [_Rep(i, d) for i, d in enumerate(plan.replicas)]
        self.oom: str | None = None
        self.breakdown = {"weights": plan.weight_bytes}
        self._memo: dict[int, tuple[float, float, float, str]] = {}

    @property
    def fits(self) -> bool:
        return self.oom is None

    @property
    def devices(self) -> list[str]:
        return list(self.plan.replicas)

    def start(self) -> None:
        for r in self.replicas:
            dev = self.system.device(r.device)
            if self.plan.weight_bytes > dev.spec.memory_bytes:
                self.oom = (f"{r.device}: the weights ({self.plan.weight_bytes / 1e9:.3g} GB) "
                            f"exceed its {dev.spec.memory_bytes / 1e9:.3g} GB")
                return
            dev.memory.allocate(self.plan.weight_bytes, "weights")
        for r in self.replicas:
            self.env.process(self._serve(r))
        self.env.process(self._arrivals())

    def _arrivals(self) -> Generator:
        reps = self.replicas

        def send(req: Request) -> None:
            r = (self._round_robin(reps) if self.plan.router == "round_robin"
                 else min(reps, key=lambda x: (len(x.waiting), x.index)))
            self._enqueue(_Req(req, r.index), r)
        yield from self._open_loop(self.plan.requests, send)

    def _cost(self, b: int, device: str) -> tuple[float, float, float, str]:
        hit = self._memo.get(b)
        if hit is None:
            dev = self.system.device(device)
            # no serving stack is profiled: the default stack of non-transformer models
            spec = self.system.stack(load_stacks().default_for(False)).apply(dev.spec)
            speed = dev.speed
            prec = self.plan.precision
            t = fl = by = 0.0
            by_cat: dict[str, float] = {}
            for op in self.plan.forward(b):
                d = spec.op_time_s(op.flops, op.bytes, prec, speed=speed)
                t, fl, by = t + d, fl + op.flops, by + op.bytes
                cat = spec.op_bound(op.flops, op.bytes, prec, speed=speed)
                by_cat[cat] = by_cat.get(cat, 0.0) + d
            hit = self._memo[b] = (t, fl, by, max(by_cat, key=by_cat.get) if by_cat
                                   else "compute")
        return hit

    def _serve(self, r: _Rep) -> Generator:
        env, plan = self.env, self.plan
        while True:
            if not r.waiting:
                if not (yield from self._idle(r, len(plan.requests))):
                    return
                continue
            if len(r.waiting) < plan.max_batch_size:  # wait for more, up to the oldest's delay
                deadline = r.waiting[0].req.arrival_s + plan.max_queue_delay_s
                if deadline > env.now:
                    r.wake = env.event()
                    yield env.any_of([r.wake, env.timeout(deadline - env.now)])
                    r.wake = None
                    continue
            batch = [r.waiting.popleft()
                     for _ in range(min(plan.max_batch_size, len(r.waiting)))]
            t0 = env.now
            for q in batch:
                q.start_s = t0
            seconds, flops, nbytes, cat = self._cost(len(batch), r.device)
            yield env.timeout(seconds)
            self.system.recorder.event(t0, env.now, f"{r.device}/compute", "compute",
                                       f"batch{len(batch)}", plan.job, r.index, nbytes, flops,
                                       cat)
            r.batch_tokens.append((t0, env.now, len(batch), len(batch), 0, len(batch), False))
            for q in batch:
                q.first_token_s = q.end_s = env.now
                self._leave()
