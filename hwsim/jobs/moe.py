"""Expert parallelism inside a :class:`~hwsim.jobs.serving.ServingJob` (the layout and the
numbers are :mod:`hwsim.workloads.moe`'s).

With ``attention_dp`` a replica's stage is ``ep`` attention groups of ``tp`` devices, each
running attention for its own sequences. The replica keeps one scheduler (one queue, one block
pool of ``ep`` times a group's KV blocks: the groups' pools are pooled, which is optimistic when
they fill unevenly); each sequence is placed on a group when it is first scheduled, the group
with the fewest running sequences (ties: the lowest index; vLLM balances its DP ranks "based on
the running and waiting queues"), and stays there. An iteration's forward passes are aligned
across the groups (vLLM runs dummy passes on idle ranks), so it lasts as long as the busiest
group's (most tokens, then most attention pairs) attention and dense work, plus every MoE
layer's all-to-all and its busiest expert rank.

Every iteration draws, from the run's seeded generator, each MoE layer's routed copies per
expert (:func:`~hwsim.workloads.moe.draw_loads`); a stage's layers then share the mean over
its MoE layers of the busiest rank's copies and active experts (the expert GEMMs' time is close
to linear in both, so the mean of the per-layer maxima gives nearly the summed time). The
all-to-all runs at its closed-form time on idle links (:meth:`CollectiveGroup.isolated`, the
pairwise algorithm among the ``ep`` ranks of one tensor-parallel index), recorded on each
device's communication stream after the iteration's compute.
"""

from __future__ import annotations

from typing import Any, Sequence

from hwsim.jobs.communicator import CollectiveGroup
from hwsim.workloads.inference import stage_layers
from hwsim.workloads.moe import (draw_loads, layer_kinds, moe_layout, routing_perms,
                                 routing_probs)

__all__ = ["ExpertParallel"]


class ExpertParallel:
    """A serving job's expert parallelism: attention-group placement, load draws, the
    all-to-all groups, and the summary counts."""

    def __init__(self, job: Any) -> None:
        plan = job.plan
        spec = plan.spec
        self.job = job
        self.layout = moe_layout(spec, plan.tp, plan.ep, plan.attention_dp)
        self.dp = self.layout.dp
        sizes = stage_layers(spec.layers, plan.pp)
        self.stage_moe = [layer_kinds(spec.dense_layers, sizes, s)[1] for s in range(plan.pp)]
        self.moe_layers = sum(self.stage_moe)
        self.probs = routing_probs(spec.experts, plan.expert_skew)
        self.perms = routing_perms(job.system.rng, spec.experts, self.moe_layers,
                                   plan.expert_skew)
        self.group_of: dict[int, int] = {}
        self.ratios: list[float] = []
        self.alltoall_s = self.iteration_s = 0.0
        self._a2a: dict[tuple, CollectiveGroup] = {}

    # -- placement and shape ----------------------------------------------------------------
    def _place(self, r: Any, seqs: Sequence[Any]) -> None:
        """Give each not yet placed sequence the attention group with the fewest running
        sequences."""
        counts = [0] * self.dp
        for s in r.running:
            g = self.group_of.get(s.req.id)
            if g is not None:
                counts[g] += 1
        for s in seqs:
            if s.req.id not in self.group_of:
                g = min(range(self.dp), key=lambda i: (counts[i], i))
                self.group_of[s.req.id] = g
                counts[g] += 1

    def _busiest(self, r: Any, prefills: list, decodes: list) -> tuple[tuple, int]:
        """The iteration's shape on its busiest attention group, and that group's prefill
        sequences."""
        self._place(r, [s for s, _ in prefills] + list(decodes))
        acc = [[0, 0.0, 0, 0.0, 0, 0] for _ in range(self.dp)]
        for s, n in prefills:
            a = acc[self.group_of[s.req.id]]
            a[0] += n
            a[1] += n * s.prefilled + n * (n + 1) / 2
            a[4] += int(s.prefilled + n >= s.target)
            a[5] += 1
        for s in decodes:
            a = acc[self.group_of[s.req.id]]
            a[2] += 1
            a[3] += s.cached + 1
            a[4] += 1
        top = max(acc, key=lambda a: (a[0] + a[2], a[1] + a[3]))
        return (top[0], top[1], top[2], float(top[3]), top[4], None), max(1, top[5])

    def iteration(self, r: Any, shape: tuple, prefills: list, decodes: list
                  ) -> tuple[tuple, int, list | None]:
        """``(shape, prefill sequences, loads)`` of the iteration: with attention_dp the
        busiest group's shape; ``loads[stage]`` = ``(expert_tokens, expert_active)`` of the
        stage's MoE layers (drawn; None for a stage without any)."""
        tokens_all = shape[0] + shape[2]
        p_seqs = max(1, len(prefills))
        if self.dp > 1:
            shape, p_seqs = self._busiest(r, prefills, decodes)
        if tokens_all == 0 or self.moe_layers == 0:
            return shape, p_seqs, None
        spec, ep = self.job.plan.spec, self.layout.ep
        busiest, active = draw_loads(self.job.system.rng, tokens_all * spec.top_k, self.probs,
                                     self.perms, ep, self.moe_layers)
        self.ratios.append(float(busiest.mean()) * ep / (tokens_all * spec.top_k))
        loads: list = []
        at = 0
        for n in self.stage_moe:
            if n == 0:
                loads.append(None)
                continue
            loads.append((float(round(busiest[at:at + n].mean())),
                          round(float(active[at:at + n].mean()), 1)))
            at += n
        return shape, p_seqs, loads

    # -- the iteration's costs --------------------------------------------------------------
    def op_args(self, load: tuple | None) -> dict[str, Any]:
        """Keyword arguments of :func:`~hwsim.workloads.inference.iteration_ops` for a stage
        whose MoE layers carry *load* (None: the uniform expectation)."""
        plan = self.job.plan
        out: dict[str, Any] = {"ep": plan.ep, "attention_dp": plan.attention_dp}
        if load is not None:
            out["expert_tokens"], out["expert_active"] = load
        return out

    def alltoall_group(self, devs: Sequence[str]) -> CollectiveGroup:
        """The dispatch/combine group of a stage's devices: the ``ep`` ranks of tensor-parallel
        index 0 (the other indices run the same exchange on their own links)."""
        key = tuple(devs[::self.job.plan.tp])
        g = self._a2a.get(key)
        if g is None:
            closed = getattr(self.job.plan, "closed_form", True)  # serving plans: always
            g = self._a2a[key] = CollectiveGroup(self.job.system, key, self.job.plan.job,
                                                 op="alltoall", closed_form=closed)
        return g

    def record(self, r: Any, devs: Sequence[str], start: float, end: float,
               seconds: float) -> None:
        """Count one stage's iteration of *seconds* and record its all-to-all time (the last
        ``end - start`` of it) on each device's communication stream."""
        self.iteration_s += seconds
        a2a = end - start
        if a2a <= 0:
            return
        self.alltoall_s += a2a
        cat = self.alltoall_group(devs).category
        for d in devs:
            self.job.system.recorder.event(start, end, f"{d}/comm", "collective",
                                           "moe.alltoall", self.job.plan.job, r.index, 0.0,
                                           0.0, cat)

    def summary(self) -> dict[str, Any]:
        """Summary keys: ``expert_imbalance`` (mean over iterations of the MoE layers' mean
        busiest-rank copies over the mean per rank, 1 = balanced), ``expert_imbalance_max``
        (its largest iteration value), ``alltoall_time_share`` (all-to-all seconds over the
        iterations' seconds, all replicas)."""
        n = len(self.ratios)
        return {"expert_imbalance": sum(self.ratios) / n if n else None,
                "expert_imbalance_max": max(self.ratios) if n else None,
                "alltoall_time_share": (self.alltoall_s / self.iteration_s
                                        if self.iteration_s > 0 else 0.0)}
