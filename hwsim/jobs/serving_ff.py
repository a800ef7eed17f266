"""Serving fast-forward: decode iterations of an unchanged batch, advanced in one step.

Between state changes a replica's scheduler picks the same decoding sequences every iteration:
nothing finishes, nothing is admitted (a request that could not be admitted cannot be while the
free KV blocks only shrink and the batch stays as it is), nothing is preempted. So the
iterations up to the next change are known ahead: their times
(the batch's :class:`~hwsim.jobs.serving_cost.StageCost` at each iteration's context total), the
blocks they take, and when a sequence finishes (its remaining output) or the cache would run
out (the scheduler would preempt). :meth:`DecodeRuns._decode_run` waits for them as one
timeout, which an arrival at the replica cuts short at the end of the iteration it falls in (the
scheduler sees it there, as it would one iteration at a time), then records every iteration as
the per-iteration loop does (the same events, batch records and counts). The results equal the
per-iteration loop's (tests/test_serving_ff.py), up to the rounding of the summed times.

A run needs: decodes only, no swaps, no speculative decoding, no expert parallelism, one
pipeline stage, no prefix cache, a replica that decodes (a disaggregated decode replica too:
an arriving hand-over cuts a run as an arrival does); otherwise the
replica runs one iteration at a time.
"""

from __future__ import annotations

from typing import Generator

__all__ = ["DecodeRuns", "MAX_RUN"]

MAX_RUN = 4096
"""The most iterations one run looks ahead (bounds the work wasted when an arrival cuts it)."""


class DecodeRuns:
    """The fast-forward methods of :class:`~hwsim.jobs.serving.ServingJob` (which provides
    ``plan``, ``env``, ``system``, ``speculation``, ``experts``, ``_swaps``, ``_stage_costed`` and
    ``_complete``)."""

    def _can_run(self, r, prefills: list, decodes: list) -> bool:
        """Whether this decode-only iteration may open a run (see the module docstring)."""
        # every running sequence decodes in it: one the scheduler has just readmitted with its
        # KV cache (handed over, swapped in) decodes from the next iteration, which changes
        return (self.plan.fast_forward and not prefills and bool(decodes) and not self._swaps
                and len(decodes) == len(r.running) and self.speculation is None
                and self.experts is None and self.plan.pp == 1 and r.cache is None
                and r.role != "prefill")

    def _decode_run(self, r, decodes: list) -> Generator:
        """SimPy sub-process: the iteration of *decodes* and the ones after it that the
        scheduler would run unchanged, up to the first that an arrival falls in. The
        iterations ahead are worked out in chunks that double (8, 16, ...), each waited for as
        one timeout, so that a run an arrival cuts short has not costed many more."""
        plan, env = self.plan, self.env
        devs = r.stages[0]
        n = len(decodes)
        bt = plan.block_tokens
        limit = min(min(s.req.output_tokens - s.generated for s in decodes), MAX_RUN)
        pairs0 = float(sum(s.cached + 1 for s in decodes))
        residues: dict[int, int] = {}
        if not plan.reserves:
            for s in decodes:
                residues[s.cached % bt] = residues.get(s.cached % bt, 0) + 1
        costs: list[tuple] = []
        ends: list[float] = []
        free, t = r.blocks_free, env.now
        at = self._stage_costed(0, devs, 0, 0.0, n, n).at  # the batch's shape: one cost
        opens = [residues.get((-j) % bt, 0) for j in range(bt)]  # by j % bt

        def extend(count: int) -> None:
            nonlocal free, t
            for j in range(len(costs), min(len(costs) + count, limit)):
                need = opens[j % bt]  # sequences whose next token opens a block
                if need > free:
                    return  # the scheduler would preempt before this iteration
                free -= need
                c = at(pairs0 + j * n)
                costs.append(c)
                t += c[0]
                ends.append(t)

        extend(1)
        t0 = env.now
        # an arrival (a request, a closed-loop client's next one, a prefilled sequence's KV
        # cache handed over) succeeds the replica's wake: it cuts the run
        r.wake = env.event()
        try:
            yield env.timeout(costs[0][0])  # the first iteration runs whatever arrives
            done = 1
            size = 8
            while not r.wake.triggered:  # else the scheduler sees the arrival now
                extend(size)
                size *= 2
                if len(costs) == done:
                    break  # nothing more runs unchanged
                yield env.any_of([env.timeout(ends[-1] - env.now), r.wake])
                if not r.wake.triggered:
                    done = len(costs)
                    continue
                now = env.now
                done = next((j + 1 for j in range(done, len(ends)) if ends[j] >= now),
                            len(ends))
                if ends[done - 1] > now:
                    yield env.timeout(ends[done - 1] - now)
        finally:
            r.wake = None
        self._finish_run(r, decodes, t0, costs[:done], ends[:done], residues)

    def _finish_run(self, r, decodes: list, t0: float, costs: list, ends: list,
                    residues: dict[int, int]) -> None:
        """Account the run's iterations as :meth:`_finish_iteration` does one by one: each
        iteration's events and batch record (no prefix cache in a run: its columns are 0), then
        every sequence's tokens and blocks at once, and the sequences that end with the last
        iteration."""
        plan, rec = self.plan, self.system.recorder
        devs, job, bt = r.stages[0], plan.job, plan.block_tokens
        n, tokens, done = len(decodes), self._per_decode * len(decodes), len(costs)
        names = [f"{d}/compute" for d in devs]
        used = r.blocks_total - r.blocks_free
        start = t0
        every = plan.record_iterations
        span = None  # a stretch of iterations of one bound: [start, flops, bytes, category]
        for j in range(done):
            seconds, flops, nbytes, category, a2a = costs[j]
            end = ends[j]
            if every:
                for name in names:
                    rec.event(start, end - a2a, name, "compute", "iteration", job, r.index,
                              nbytes, flops, category)
            elif span is not None and span[3] == category:
                span[1] += flops
                span[2] += nbytes
            else:
                if span is not None:
                    self._record_span(names, r.index, span, start)
                span = [start, flops, nbytes, category]
            r.batch_tokens.append((start, end, n, tokens, used, 0, r.kv_blocked, 0, 0))
            used += residues.get((-j) % bt, 0)  # blocks the iteration's new tokens opened
            start = end
        if span is not None:
            self._record_span(names, r.index, span, start)
        r.iterations += done
        for s in decodes:
            if not plan.reserves:  # a block for every token that opens one
                grow = (s.cached + done - 1) // bt - (s.cached - 1) // bt
                r.blocks_free -= grow
                s.blocks += grow
            s.cached += done
            s.generated += done
        self._complete(r, ends[-1])

    def _record_span(self, names: list[str], replica: int, span: list, end: float) -> None:
        """One ``iteration`` event per device for a stretch of iterations of one bound."""
        rec, job = self.system.recorder, self.plan.job
        for name in names:
            rec.event(span[0], end, name, "compute", "iteration", job, replica, span[2],
                      span[1], span[3])
