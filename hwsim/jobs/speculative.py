"""Speculative decoding inside a :class:`~hwsim.jobs.serving.ServingJob` (the numbers are
:mod:`hwsim.workloads.speculative`'s).

Each iteration with decoding sequences becomes a speculative step for all of them, as vLLM runs
it inside continuous batching: the proposer runs first (a draft model's ``k`` decode passes at
the batch of decoding sequences, plus its prefill of the iteration's prompt chunks, on the
first pipeline stage's devices; MTP modules likewise on the last stage's; n-gram lookup costs
nothing on the devices), then the target model's iteration verifies ``k + 1`` positions of every
decoding sequence as a prefill-like chunk next to any prompt chunks. Each sequence keeps the
accepted guesses plus one token (drawn from the run's seeded generator, never more than its
remaining output); its KV cache reserves ``k + 1`` new slots for the verification (the blocks
stay with the sequence; vLLM's lookahead slots) and keeps what was accepted.
"""

from __future__ import annotations

from typing import Any, Generator

from hwsim.workloads.inference import ServingCost
from hwsim.workloads.speculative import (decode_pairs, draw_accepted, expected_tokens_per_step,
                                         proposer, proposer_cost, verify_shape)

__all__ = ["Speculation"]


class Speculation:
    """A serving job's speculative decoding: its costs, KV reservations, draws and counts."""

    def __init__(self, job: Any) -> None:
        plan = job.plan
        self.job, self.cfg = job, plan.speculative
        self.k = self.cfg.tokens
        self.model = proposer(self.cfg, plan.spec)
        self.stage = 0 if self.cfg.method == "draft" else plan.pp - 1
        self._memo: dict[tuple, tuple[float, float, float, str]] = {}
        self.steps = self.proposed = self.accepted = self.examined = self.emitted = 0

    def costs(self, costs: list[ServingCost]) -> list[ServingCost]:
        """The stages' per-device costs with the proposer's weights and KV bytes per token
        added to the stage that runs it (one block table serves both caches)."""
        plan = self.job.plan
        extra = proposer_cost(self.cfg, plan.spec, tp=plan.tp, precision=plan.precision)
        out = list(costs)
        c = out[self.stage]
        out[self.stage] = ServingCost(c.weight_bytes + extra.weight_bytes,
                                      c.kv_bytes_per_token + extra.kv_bytes_per_token, c.layers)
        return out

    def need_blocks(self, decodes: list) -> int:
        """KV blocks the decoding sequences still need for ``k + 1`` new slots each."""
        return sum(max(0, self.job._blocks(s.cached + self.k + 1) - s.blocks) for s in decodes)

    def verify(self, shape: tuple, decodes: list) -> tuple:
        """The target iteration's shape ``(prefill tokens, prefill pairs, decode sequences,
        decode pairs, logit tokens, prefill keys read)`` with the decodes verified as chunks of
        ``k + 1`` (the prompt chunks' keys counted as the plain iteration counts them)."""
        p_tokens, p_pairs, d_seqs, _, logits, _ = shape
        t, pairs, keys, lg = verify_shape(self.k, [s.cached for s in decodes])
        return p_tokens + t, p_pairs + pairs, 0, 0.0, logits - d_seqs + lg, p_tokens + keys

    def propose(self, r: Any, prefills: list, decodes: list) -> Generator:
        """SimPy sub-process: the proposer's passes of one iteration on its stage's devices,
        one after another, recorded as one ``speculative.<method>`` compute event."""
        if self.model is None:
            return
        spec, modules = self.model
        passes: list[tuple[tuple, int]] = []
        p_tokens = sum(n for _, n in prefills)
        if p_tokens:  # the proposer's own KV cache of the prompt chunks (no logits)
            pairs = sum(n * s.prefilled + n * (n + 1) / 2 for s, n in prefills)
            passes.append(((p_tokens, pairs, 0, 0.0, 0), modules))
        if decodes:
            cached = [s.cached for s in decodes]
            passes += [((0, 0.0, len(decodes), decode_pairs(cached, j), len(decodes)), 1)
                       for j in range(1, self.k + 1)]
        if not passes:
            return
        job, env = self.job, self.job.env
        devs = r.stages[self.stage]
        seconds = flops = nbytes = 0.0
        by: dict[str, float] = {}
        for shape, times in passes:
            key = (shape[0], round(shape[1]), shape[2], round(shape[3]), shape[4])
            hit = self._memo.get(key)
            if hit is None:
                hit = self._memo[key] = job._stage_time(0, devs, *shape, model=(spec, 1))
            seconds += times * hit[0]
            flops += times * hit[1]
            nbytes += times * hit[2]
            by[hit[3]] = by.get(hit[3], 0.0) + times * hit[0]
        t0 = env.now
        yield env.timeout(seconds)
        for d in devs:
            job.system.recorder.event(t0, env.now, f"{d}/compute", "compute",
                                      f"speculative.{self.cfg.method}", job.plan.job, r.index,
                                      nbytes, flops, max(by, key=by.get))

    def advance(self, r: Any, decodes: list) -> None:
        """After the verification: each decoding sequence takes its ``k + 1`` reserved slots
        (continuous batching; a static batch, or ``no_evict``, reserved its blocks at
        admission), keeps the
        accepted guesses plus one token, at most its remaining output, and the counts grow."""
        plan, job = self.job.plan, self.job
        drawn = draw_accepted(job.system.rng, self.cfg.acceptance, self.k, len(decodes))
        for s, n in zip(decodes, drawn):
            if not plan.reserves:
                grow = job._blocks(s.cached + self.k + 1) - s.blocks
                if grow > 0:
                    r.blocks_free -= grow
                    s.blocks += grow
            n = int(n)
            e = min(n + 1, s.req.output_tokens - s.generated)
            s.cached += e
            s.generated += e
            self.steps += 1
            self.proposed += self.k
            self.accepted += n
            self.examined += n + (n < self.k)  # guesses after the first rejection are not checked
            self.emitted += e

    def summary(self) -> dict[str, Any]:
        """Summary keys: ``spec_acceptance_rate`` (accepted guesses over the guesses the target
        checked, those up to and including the first rejection: the measured ``alpha``),
        ``spec_draft_acceptance_rate`` (accepted over proposed, vLLM's
        ``num_accepted_tokens / num_draft_tokens``), ``spec_tokens_per_step`` (tokens a
        sequence gained per step, accepted plus one, capped by its remaining output) and its
        closed form ``spec_tokens_per_step_expected``, ``spec_steps`` (sequence-steps)."""
        return {"spec_acceptance_rate": self.accepted / self.examined if self.examined else None,
                "spec_draft_acceptance_rate": (self.accepted / self.proposed
                                               if self.proposed else None),
                "spec_tokens_per_step": self.emitted / self.steps if self.steps else None,
                "spec_tokens_per_step_expected": expected_tokens_per_step(self.cfg.acceptance,
                                                                          self.k),
                "spec_steps": self.steps}
