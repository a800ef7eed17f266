"""Speculative decoding as numbers: what a decode step proposes, what the target verifies, how
many tokens it keeps, and what the proposer adds to a device's memory. Pure functions; the
serving job (:mod:`hwsim.jobs.speculative`) runs them.

The method (Leviathan, Kalman and Matias 2023, "Fast Inference from Transformers via
Speculative Decoding", arXiv 2211.17192, Algorithm 1): each decode step of a sequence, a cheap
proposer guesses the next ``k`` tokens; the target model runs once over the ``k + 1`` positions
(the last sampled token and the ``k`` guesses) and keeps the guesses up to the first it rejects,
plus one token of its own (the correction at the rejected position, or a bonus token when all
``k`` were kept). With every guess accepted independently with probability ``alpha`` (the
paper's simplifying i.i.d. assumption, section 3.1), the accepted guesses ``n`` follow a
geometric law truncated at ``k``, ``P(n >= i) = alpha^i``, and a step yields ``n + 1`` tokens,
in expectation ``(1 - alpha^(k+1)) / (1 - alpha)`` (the paper's equation 1; ``k + 1`` at
``alpha = 1``).

Proposers:

- ``draft``: a smaller model of the same vocabulary (vLLM's draft-model method; the vLLM blog,
  "How Speculative Decoding Boosts vLLM Performance by up to 2.8x", 2024, states the shared
  vocabulary requirement) runs ``k`` decode passes, one token per sequence each; it also
  prefills every prompt, to hold its own KV cache.
- ``ngram``: prompt lookup (copying the tokens that followed the last n-gram's earlier
  occurrence): a host-side table lookup, no device work (the paper's section 3.6 calls such
  proposers "negligible-cost").
- ``mtp``: multi-token-prediction modules on the target (DeepSeek-V3 style; Megatron-Core's
  MTP guide: "the k-th MTP module consists of a shared embedding layer, a projection matrix, a
  Transformer block, and a shared output head", ``D`` sequential modules predicting ``D``
  additional tokens). Each of the ``k`` modules is costed as one layer of the target with the
  shared embedding lookup and LM head; its projection matrix (``2 h x h``) is counted in memory
  but its FLOPs are not modelled (about a sixth of a Llama-70B layer's matrix work).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from numbers import Integral, Real

import numpy as np

from hwsim.workloads.inference import ServingCost, serving_cost
from hwsim.workloads.ops import dtype_bytes
from hwsim.workloads.transformer import TransformerSpec

__all__ = ["METHODS", "SpeculativeConfig", "expected_tokens_per_step", "draw_accepted",
           "proposer", "proposer_cost", "verify_shape", "decode_pairs", "check_proposer"]

METHODS = ("draft", "ngram", "mtp")


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding of a serving plan: ``method`` (:data:`METHODS`), ``tokens`` (``k``,
    guesses per step), ``acceptance`` (``alpha``, each guess's acceptance probability) and, for
    ``draft``, the ``draft`` model's spec."""

    method: str
    tokens: int
    acceptance: float
    draft: TransformerSpec | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown speculative method {self.method!r}; valid: "
                             f"{', '.join(METHODS)}")
        if not isinstance(self.tokens, Integral) or isinstance(self.tokens, bool) \
                or self.tokens < 1:
            raise ValueError(f"tokens={self.tokens!r} must be an integer >= 1 (guesses per step)")
        a = self.acceptance
        if not isinstance(a, Real) or isinstance(a, bool) or not 0.0 <= a <= 1.0:
            raise ValueError(f"acceptance={a!r} must be a probability in [0, 1]")
        if (self.method == "draft") != (self.draft is not None):
            raise ValueError("method 'draft' needs a draft model, and only it takes one")


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """Tokens a step yields in expectation: ``(1 - alpha^(k+1)) / (1 - alpha)``, ``k + 1`` at
    ``alpha = 1`` (Leviathan et al. 2023, equation 1)."""
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def draw_accepted(rng: np.random.Generator, alpha: float, k: int, n: int) -> np.ndarray:
    """Accepted guesses of *n* sequence-steps: the failures-before-success count of a
    geometric law with success probability ``1 - alpha``, truncated at *k*. Nothing is drawn at
    ``alpha`` 0 (all zero) or 1 (all *k*)."""
    if alpha <= 0.0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    if alpha >= 1.0:
        return np.full(n, k, dtype=np.int64)
    return np.minimum(rng.geometric(1.0 - alpha, n) - 1, k).astype(np.int64)


def proposer(cfg: SpeculativeConfig, target: TransformerSpec) -> tuple[TransformerSpec, int] | None:
    """The model whose passes propose, and how many modules it has: the draft (one model), the
    target's MTP modules (one layer each, ``k`` of them), or None (``ngram``)."""
    if cfg.method == "draft":
        return cfg.draft, 1
    if cfg.method == "mtp":
        return replace(target, layers=1, dense_layers=0, name=f"{target.name}.mtp"), cfg.tokens
    return None


def proposer_cost(cfg: SpeculativeConfig, target: TransformerSpec, *, tp: int,
                  precision: str) -> ServingCost:
    """What the proposer adds to each device that runs it: the draft's weights and KV bytes per
    token (its layers, embedding and LM head, sharded by *tp*); for ``mtp``, ``k`` modules of
    one target layer plus a ``2 h x h`` projection (split by *tp*) each, the embedding and head
    shared with the target, and one layer's KV per module; nothing for ``ngram``."""
    if cfg.method == "draft":
        return serving_cost(cfg.draft, tp=tp, precision=precision)
    if cfg.method == "ngram":
        return ServingCost(0.0, 0.0, 0)
    one = serving_cost(replace(target, layers=1, dense_layers=0), tp=tp, precision=precision)
    two = serving_cost(replace(target, layers=2, dense_layers=0), tp=tp, precision=precision)
    proj = 2.0 * target.hidden * target.hidden / tp * dtype_bytes(precision)
    k = cfg.tokens
    return ServingCost(k * (two.weight_bytes - one.weight_bytes + proj),
                       k * one.kv_bytes_per_token, k)


def check_proposer(cfg: SpeculativeConfig, target: TransformerSpec, *, tp: int,
                   precision: str) -> None:
    """ValueError when the draft cannot propose for *target*: not a decoder, another
    vocabulary, not smaller, or not shardable by *tp*."""
    d = cfg.draft
    if d is None:
        return
    if not isinstance(d, TransformerSpec) or d.encoder:
        raise ValueError(f"the draft model must be a decoder LLM, got {getattr(d, 'name', d)!r}")
    if d.vocab != target.vocab:
        raise ValueError(f"the draft model {d.name!r} has a vocabulary of {d.vocab:,} tokens, "
                         f"the target {target.name!r} {target.vocab:,}: a draft proposes the "
                         f"target's tokens, so they must share the vocabulary")
    if d.params() >= target.params():
        raise ValueError(f"the draft model {d.name!r} ({d.params() / 1e9:.3g} B parameters) is "
                         f"not smaller than the target {target.name!r} "
                         f"({target.params() / 1e9:.3g} B); valid: a smaller draft")
    serving_cost(d, tp=tp, precision=precision)  # its heads must shard over the target's tp


def verify_shape(k: int, cached: list[int]) -> tuple[int, float, int, int]:
    """The target's verification of sequences with *cached* tokens in their KV caches, each
    running ``k + 1`` new positions (the last sampled token and the ``k`` guesses) as a
    prefill-like chunk: ``(tokens, causal pairs, distinct keys read, logit tokens)``. Position
    ``j`` (0-based) of a sequence with ``c`` cached attends ``c + j + 1`` keys, so a sequence
    adds ``(k+1) c + (k+1)(k+2)/2`` pairs and reads ``c + k + 1`` keys; every position gives
    logits (each is checked against a guess or samples the bonus token)."""
    m = k + 1
    n = len(cached)
    total = float(sum(cached))
    return m * n, m * total + n * m * (m + 1) / 2.0, int(total) + n * m, m * n


def decode_pairs(cached: list[int], j: int) -> float:
    """Keys the proposer's ``j``-th pass (1-based) attends over, all sequences together:
    its input token of a sequence with *cached* target-cached tokens sits at position
    ``c + j - 1``, so it attends ``c + j`` keys."""
    return float(sum(cached)) + j * len(cached)

