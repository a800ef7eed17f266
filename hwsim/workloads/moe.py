"""Mixture-of-experts serving: how a replica's devices split a MoE model's experts (expert
parallelism, optionally with data-parallel attention), and how many routed token copies each
expert rank receives. Pure functions; :mod:`hwsim.workloads.inference` builds the ops with
them and :mod:`hwsim.jobs.moe` draws the loads during a run.

Layout (one pipeline stage of a replica)
----------------------------------------
``tp`` is the tensor-parallel degree of the attention and the other dense parts (embedding,
norms, dense FFN layers, shared experts, LM head), as without experts. ``ep`` splits the routed
experts of every MoE layer into ``ep`` groups of ``experts / ep``, placed in order (expert ``i``
on group ``i // (experts / ep)``: vLLM's default ``expert_placement_strategy`` ``linear``,
vllm/config/parallel.py).

- ``attention_dp`` false: the stage is the ``tp`` devices; ``ep`` divides ``tp`` and each
  expert group is split tensor-parallel over ``tp / ep`` devices (``ep = tp``: whole experts, as
  vLLM ``--tensor-parallel-size N --enable-expert-parallel`` or SGLang ``--tp N --ep N`` hold
  them). After attention's all-reduce every rank holds all ``T`` tokens, so each rank runs its
  own experts on the copies routed to them and the FFN's all-reduce (already there for TP) sums
  the partial outputs: no all-to-all (SGLang's ``--moe-a2a-backend none``: "Uses All-Reduce or
  All-Gather for token dispatch").
- ``attention_dp`` true: the stage is ``ep x tp`` devices, ``ep`` attention data-parallel
  groups of ``tp`` (SGLang ``--enable-dp-attention``, vLLM ``--data-parallel-size`` with
  ``--enable-expert-parallel``: the attention weights replicated, the experts split). Each group
  holds its own sequences (and their KV cache) and runs attention on its own tokens; expert
  group ``g`` lives on attention group ``g``, each expert split over its ``tp`` devices.
  Routed copies go to their expert's group by an all-to-all among the ``ep`` ranks of one
  tensor-parallel index (dispatch) and come back the same way (combine): per rank and
  direction ``T_g x top_k x hidden x activation bytes x (ep - 1) / ep`` leave (the
  ``1 / ep`` routed to its own group stay), ``T_g`` the group's tokens; the group's FFN
  all-reduce then sums the ``tp`` partial outputs. This is the exchange of DeepEP and pplx
  (vLLM's ``deepep_*`` / ``pplx`` all2all backends, SGLang ``--moe-a2a-backend deepep``);
  vLLM's default ``allgather_reducescatter`` backend, which moves every token to every rank,
  and dispatch in FP8 (DeepEP) are not modelled: copies move at the activations' size.

Every device holds ``experts / ep`` routed experts of each MoE layer, each a ``1 / etp`` slice
(``etp = tp / ep`` without, ``tp`` with attention_dp), and the dense parts split by ``tp``.

Expert load
-----------
Each of ``T_all`` tokens (all attention groups together) sends ``top_k`` copies; a copy goes to
expert ``e`` with probability ``p_e``: uniform, or Zipf over experts (``p ~ 1 / rank^s``,
``s = skew``) with each MoE layer's ranking a random permutation fixed for the run. The counts
per expert are drawn as one multinomial of ``T_all x top_k`` copies (a token's ``top_k``
experts are distinct in a real router; the multinomial lets one token hit an expert twice,
which slightly overstates the spread: for uniform routing a rank's count has variance
``n k/E (1 - 1/E)`` instead of ``n k/E (1 - k/E)`` per expert). A rank's load is the sum over
its experts; every MoE layer waits for its busiest rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

__all__ = ["MoELayout", "moe_layout", "layer_kinds", "expected_load", "alltoall_bytes",
           "routing_probs", "routing_perms", "draw_loads"]


@dataclass(frozen=True)
class MoELayout:
    """A validated expert-parallel layout (module docstring): ``tp`` attention TP degree,
    ``ep`` expert groups, ``attention_dp``."""

    tp: int = 1
    ep: int = 1
    attention_dp: bool = False

    @property
    def dp(self) -> int:
        """Attention data-parallel groups of a stage."""
        return self.ep if self.attention_dp else 1

    @property
    def etp(self) -> int:
        """Devices one routed expert is split over."""
        return self.tp if self.attention_dp else self.tp // self.ep

    @property
    def devices(self) -> int:
        """Devices of one pipeline stage."""
        return self.tp * self.dp


def moe_layout(spec, tp: int, ep: int = 1, attention_dp: bool = False) -> MoELayout:
    """The layout of *spec* (a :class:`~hwsim.workloads.transformer.TransformerSpec`) at
    ``tp``, ``ep``, ``attention_dp``. ValueError: ``ep`` on a dense model, ``ep`` not dividing
    the experts (or, without attention_dp, ``tp``), ``attention_dp`` without ``ep > 1``."""
    for name, v in (("tp", tp), ("ep", ep)):
        if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    E = spec.experts
    if ep > 1 and E == 1:
        raise ValueError(f"ep={ep} splits the experts of a mixture-of-experts model; model "
                         f"{spec.name!r} is dense (experts=1); valid: ep: 1")
    if E % ep:
        raise ValueError(f"ep={ep} must divide the model's {E} experts (model {spec.name!r}); "
                         f"valid: ep in {', '.join(str(d) for d in range(1, E + 1) if E % d == 0)}")
    if attention_dp and ep == 1:
        raise ValueError("attention_dp replicates attention over the expert-parallel groups: it "
                         "needs ep > 1; valid: attention_dp: false, or ep >= 2")
    if not attention_dp and tp % ep:
        raise ValueError(f"ep={ep} must divide tp={tp} without attention_dp (the experts are "
                         f"split over the tensor-parallel devices); valid: ep dividing tp, or "
                         f"attention_dp: true (then a stage has tp x ep devices)")
    return MoELayout(int(tp), int(ep), bool(attention_dp))


def layer_kinds(dense_layers: int, sizes: list[int], stage: int) -> tuple[int, int]:
    """(dense, MoE) layers of pipeline stage *stage*, the stages holding *sizes* layers in
    order and the first *dense_layers* of the model dense."""
    start = sum(sizes[:stage])
    dense = max(0, min(start + sizes[stage], dense_layers) - start)
    return dense, sizes[stage] - dense


def expected_load(experts: int, top_k: int, ep: int, tokens_all: float) -> tuple[float, float]:
    """(routed copies per expert rank, distinct experts of one rank they touch), in expectation
    under uniform routing, for *tokens_all* tokens: ``T k / ep`` and
    ``(E / ep) (1 - (1 - k/E)^T)`` (each token picks a given expert with probability ``k/E``).
    At ``ep = 1`` these are all copies and the experts the iteration touches."""
    if tokens_all <= 0:
        return 0.0, 0.0
    local = experts // ep
    return tokens_all * top_k / ep, local * (1.0 - (1.0 - top_k / experts) ** tokens_all)


def alltoall_bytes(tokens: float, top_k: int, hidden: int, value_bytes: float, ep: int) -> float:
    """Bytes one rank sends (and, balanced, receives) in one dispatch or one combine:
    ``tokens x top_k x hidden x value_bytes x (ep - 1) / ep``."""
    return tokens * top_k * hidden * value_bytes * (ep - 1) / ep


def routing_probs(experts: int, skew: float = 0.0) -> np.ndarray:
    """Probability of each expert (by popularity rank) receiving a copy: uniform at
    ``skew = 0``, else Zipf ``p_i ~ (i + 1)^-skew``."""
    if not isinstance(skew, Real) or isinstance(skew, bool) or not math.isfinite(skew) \
            or skew < 0:
        raise ValueError(f"expert_skew={skew!r} must be a finite number >= 0 (0: uniform)")
    w = np.arange(1, experts + 1, dtype=float) ** -float(skew)
    return w / w.sum()


def routing_perms(rng: np.random.Generator, experts: int, layers: int,
                  skew: float) -> np.ndarray | None:
    """Each MoE layer's placement of the popularity ranking over the experts (a random
    permutation per layer, drawn once), or None for uniform routing (nothing drawn)."""
    if skew == 0 or layers == 0:
        return None
    return np.stack([rng.permutation(experts) for _ in range(layers)])


def draw_loads(rng: np.random.Generator, copies: int, probs: np.ndarray,
               perms: np.ndarray | None, ep: int, layers: int) -> tuple[np.ndarray, np.ndarray]:
    """For *layers* MoE layers, *copies* routed copies each: per layer, the busiest expert
    rank's copies and how many of its experts got any (module docstring: one multinomial per
    layer; expert ``e`` on rank ``e // (E / ep)``)."""
    E = len(probs)
    counts = rng.multinomial(copies, probs, size=layers)       # by popularity rank
    if perms is not None:                                       # to expert ids, per layer
        placed = np.empty_like(counts)
        np.put_along_axis(placed, perms[:layers], counts, axis=1)
        counts = placed
    per = counts.reshape(layers, ep, E // ep)
    load = per.sum(axis=2)
    top = load.argmax(axis=1)
    busiest = per[np.arange(layers), top]
    return load[np.arange(layers), top].astype(float), (busiest > 0).sum(axis=1).astype(float)
