"""Serving fast-forward: decode iterations of an unchanged batch, advanced in one step.

Between state changes a replica's scheduler picks the same decoding sequences every iteration:
nothing finishes, nothing is admitted (a request that could not be admitted cannot be while the
free KV blocks only shrink and the batch stays as it is), nothing is preempted. So the
iterations up to the next change are known ahead: how many run before a sequence finishes (its
remaining output) or the cache would run out (the scheduler would preempt; the blocks a batch
opens repeat every ``block_tokens`` iterations, so this is a division), and what they cost.

Their cost is the batch's :class:`~hwsim.jobs.serving_cost.StageCost` at each iteration's
context total, which grows by the batch size every iteration; it is linear in that total but
where an attention kernel's regime or the iteration's bound changes
(:meth:`StageCost.piece`). So a run is a few *pieces* (mostly one), found by comparing the
cost's piece at both ends of the run (and halving the range where they differ; a piece is known
to hold up to the furthest point it was found at before), and on a piece
an iteration takes ``A + B * j`` seconds: ``A`` the first one's exact cost, ``B`` the piece's
slope times the batch size; the ``x``-th iteration of a piece that starts at ``ts`` ends at
:func:`piece_end` ``ts + x * A + B * x (x - 1) / 2``. Nothing is worked out per iteration:
:meth:`DecodeRuns._decode_run` waits for the run's end as one timeout, which an arrival at the
replica cuts short at the end of the iteration it falls in (the scheduler sees it there, as it
would one iteration at a time: the iteration is found by solving that quadratic), and records
the run as one entry of the replica's :class:`~hwsim.jobs.serving_log.IterationLog` and, at
the default ``outputs.record: ops``, one event per device for each piece of one bound (with
``record: full``, one per iteration, as the per-iteration loop records them). The results equal
the per-iteration loop's (tests/test_serving_ff.py) up to the rounding of the summed times
(about 1e-14 of them).

A run needs: decodes only, no swaps, no speculative decoding, no expert parallelism, one
pipeline stage, no prefix cache, a replica that decodes (a disaggregated decode replica too:
an arriving hand-over cuts a run as an arrival does); otherwise the
replica runs one iteration at a time.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Generator

__all__ = ["DecodeRuns", "piece_end", "run_pieces"]


def piece_end(ts: float, a: float, b: float, x: int) -> float:
    """The end of the *x*-th iteration (0: the start *ts*) of a piece whose iteration ``j``
    takes ``a + b * j`` seconds. :meth:`IterationLog.columns` evaluates the same expression on
    numpy arrays, which gives the same floats."""
    return ts + (x * a + b * (x * (x - 1) / 2))


def run_pieces(cost, pairs0: float, n: int, count: int) -> list[tuple]:
    """The pieces of *count* iterations of a batch of *n* decodes whose first reads *pairs0*
    keys: ``(first, iterations, piece)`` with :meth:`StageCost.piece` at its first iteration.
    A run that ends no further than where its first iteration's key was seen before is one
    piece without looking (``StageCost.reach``)."""
    out = []
    reach = cost.reach
    a = 0
    while a < count:
        first = cost.piece(pairs0 + a * n)
        key, b, last = first[5], count, pairs0 + (count - 1) * n
        if count - 1 > a and last > reach.get(key, -math.inf):
            if cost.piece(last)[5] == key:
                reach[key] = last
            else:
                lo, hi = a, count - 1  # the key holds at lo, not at hi
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if cost.piece(pairs0 + mid * n)[5] == key:
                        lo = mid
                    else:
                        hi = mid
                b = hi
        out.append((a, b - a, first))
        a = b
    return out


def _first_at_or_after(ts: float, a: float, b: float, count: int, t: float) -> int:
    """The first *x* in ``1..count`` whose :func:`piece_end` is at or after *t* (*count* if
    none): the quadratic's root, then checked against the ends themselves."""
    r = t - ts
    if b > 0:
        h = a - b / 2
        x = math.ceil((-h + math.sqrt(h * h + 2 * b * r)) / b)
    else:
        x = math.ceil(r / a) if a > 0 else 1
    x = min(max(x, 1), count)
    while x > 1 and piece_end(ts, a, b, x - 1) >= t:
        x -= 1
    while x < count and piece_end(ts, a, b, x) < t:
        x += 1
    return x


class DecodeRuns:
    """The fast-forward methods of :class:`~hwsim.jobs.serving.ServingJob` (which provides
    ``plan``, ``env``, ``system``, ``speculation``, ``experts``, ``_swaps``, ``_per_decode``,
    ``_run_costs``, ``_stage_costed``, ``_stream_names`` and ``_complete``)."""

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
        scheduler would run unchanged, up to the first that an arrival falls in."""
        plan, env = self.plan, self.env
        n = len(decodes)
        bt = plan.block_tokens
        count, pairs = math.inf, 0  # iterations before the first sequence ends; keys read
        residues = [0] * bt  # the sequences by tokens in their last block
        for s in decodes:
            left = s.req.output_tokens - s.generated
            if left < count:
                count = left
            pairs += s.cached + 1
            residues[s.cached % bt] += 1
        pairs0 = float(pairs)
        opens = None  # by j % bt: the sequences whose j-th token opens a block
        if not plan.reserves:
            opens = (residues[0], *residues[:0:-1])  # residues[-j % bt]
            # iteration j runs if the blocks of iterations 0..j fit: n a period, the first
            # ones of a period in part (the first iteration fits: the scheduler checked)
            periods, rest = divmod(r.blocks_free, n)
            room = periods * bt + bisect.bisect_right(list(itertools.accumulate(opens)), rest)
            if room < count:
                count = room
        cost = self._run_costs.get((r.index, n))
        if cost is None:  # the batch's shape: one cost
            cost = self._run_costs[r.index, n] = self._stage_costed(0, r.stages[0], 0, 0.0, n, n)
        t0 = env.now
        # (start, iterations, first one's seconds, seconds more each, its piece, its keys)
        pieces = []
        ts = t0
        for j, k, p in run_pieces(cost, pairs0, n, count):
            pieces.append((ts, k, p[0], p[6] * n, p, pairs0 + j * n))
            ts = piece_end(ts, p[0], p[6] * n, k)
        # an arrival (a request, a closed-loop client's next one, a prefilled sequence's KV
        # cache handed over) succeeds the replica's wake: it cuts the run
        wake = r.wake = env.event()
        timer = env.timeout(ts - t0)
        timer.callbacks.append(lambda _: wake.triggered or wake.succeed())
        try:
            yield wake
            if not timer.processed:  # cut: at the end of the iteration the arrival falls in
                now = env.now
                for i, (ts, k, a, b, p, d) in enumerate(pieces):
                    end = piece_end(ts, a, b, k)
                    if end >= now or i == len(pieces) - 1:
                        k = _first_at_or_after(ts, a, b, k, now)
                        pieces[i:] = [(ts, k, a, b, p, d)]
                        end = piece_end(ts, a, b, k)
                        if end > now:
                            yield env.timeout(end - now)
                        break
        finally:
            r.wake = None
        self._finish_run(r, decodes, pieces, opens, cost)

    def _finish_run(self, r, decodes: list, pieces: list, opens: tuple | None, cost
                    ) -> None:
        """Account the run's iterations as :meth:`_finish_iteration` does one by one: its
        record in the replica's log and its events (no prefix cache in a run: those columns are
        0), then every sequence's tokens and blocks at once, and the sequences that end with
        the last iteration."""
        plan = self.plan
        bt, n = plan.block_tokens, len(decodes)
        done = 0
        for x in pieces:
            done += x[1]
        names = self._stream_names(r, 0)
        if plan.record_iterations:
            self._record_iterations(names, r.index, pieces, n, cost)
        else:
            self._record_spans(names, r.index, pieces, n)
        r.iterations += done
        used, opened = r.blocks_total - r.blocks_free, 0
        ended = []
        grows = not plan.reserves
        for s in decodes:
            if grows:  # a block for every token that opens one
                grow = (s.cached + done - 1) // bt - (s.cached - 1) // bt
                r.blocks_free -= grow
                s.blocks += grow
                opened += grow
            s.cached += done
            s.generated += done
            if s.generated >= s.req.output_tokens:
                ended.append(s)
        ts, k, a, b = pieces[-1][:4]
        end = piece_end(ts, a, b, k)
        # the blocks in use at the last iteration's start: all but those it opened
        last = used + opened - (opens[(done - 1) % bt] if opens is not None else 0)
        r.batch_tokens.run(tuple([x[:4] for x in pieces]), n, self._per_decode * n, used,
                           r.kv_blocked, opens, end, last)
        self._complete(r, end, ended)

    def _record_spans(self, names: list[str], replica: int, pieces: list, n: int) -> None:
        """One ``iteration`` event per device for each stretch of the run's pieces with one
        bound: its FLOPs and bytes summed (linear on a piece)."""
        rec, job = self.system.recorder, self.plan.job
        spans = []  # [start, flops, bytes, category, end]
        for ts, k, a, b, p, _ in pieces:
            steps = k * (k - 1) / 2 * n  # keys read beyond the first iteration's, all summed
            flops, nbytes = k * p[1] + p[7] * steps, k * p[2] + p[8] * steps
            end = piece_end(ts, a, b, k)
            if spans and spans[-1][3] == p[3]:
                span = spans[-1]
                span[1] += flops
                span[2] += nbytes
                span[4] = end
            else:
                spans.append([ts, flops, nbytes, p[3], end])
        rec.event_rows([(start, end, name, "compute", "iteration", job, replica, nbytes,
                         flops, category) for start, flops, nbytes, category, end in spans
                        for name in names])

    def _record_iterations(self, names: list[str], replica: int, pieces: list, n: int,
                           cost) -> None:
        """``record: full``: every iteration its own event per device, with its own FLOPs,
        bytes and bound (:meth:`StageCost.at` at its context total)."""
        rec, job = self.system.recorder, self.plan.job
        rows = []
        for ts, k, a, b, _, d in pieces:
            start = ts
            for x in range(k):
                end = piece_end(ts, a, b, x + 1)
                _, flops, nbytes, category, a2a = cost.at(d + x * n)
                rows += [(start, end - a2a, name, "compute", "iteration", job, replica, nbytes,
                          flops, category) for name in names]
                start = end
        rec.event_rows(rows)
