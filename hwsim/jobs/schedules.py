"""Pipeline-parallel schedules: the order in which each stage runs forward and backward passes of
micro-batches, as plain data, and the dependencies between stages.

A unit is ``(phase, micro_batch, chunk)`` with phase ``"F"`` or ``"B"``; ``chunk`` is the model
chunk (virtual stage) of the interleaved schedule, 0 otherwise. With ``p`` stages and ``m``
micro-batches of equal forward time ``tf`` and backward time ``tb`` and free communication,
GPipe and 1F1B both take ``(m + p - 1) * (tf + tb)``: a bubble of ``(p - 1) / (m + p - 1)`` of the
step (1F1B only keeps fewer micro-batches in flight: ``p - s`` on stage ``s`` instead of ``m``).
Interleaving ``v`` chunks per stage shrinks the bubble to ``(p - 1) / v`` units of ``tf + tb``.
Sources: Huang et al., GPipe (2019); Narayanan et al., PipeDream-Flush/1F1B (2021) and
"Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM" (SC'21, Sec. 2.2).
"""

from __future__ import annotations

__all__ = ["Unit", "gpipe", "one_f_one_b", "interleaved", "schedule", "SCHEDULES",
           "in_flight", "upstream", "downstream"]

Unit = tuple[str, int, int]
SCHEDULES = ("gpipe", "1f1b", "interleaved")


def _check(p: int, m: int) -> None:
    if p < 1 or m < 1:
        raise ValueError(f"stages(={p}) and micro_batches(={m}) must be >= 1")


def gpipe(p: int, m: int) -> list[list[Unit]]:
    """All forwards, then all backwards (in reverse micro-batch order), on every stage."""
    _check(p, m)
    return [[("F", i, 0) for i in range(m)] + [("B", i, 0) for i in reversed(range(m))]
            for _ in range(p)]


def one_f_one_b(p: int, m: int) -> list[list[Unit]]:
    """PipeDream-Flush: stage ``s`` runs ``min(p - s - 1, m)`` warm-up forwards, then alternates
    one forward and one backward, then drains the remaining backwards."""
    _check(p, m)
    out = []
    for s in range(p):
        warm = min(p - s - 1, m)
        units: list[Unit] = [("F", i, 0) for i in range(warm)]
        f, b = warm, 0
        while f < m:
            units.append(("F", f, 0))
            f += 1
            units.append(("B", b, 0))
            b += 1
        units += [("B", i, 0) for i in range(b, m)]
        out.append(units)
    return out


def interleaved(p: int, m: int, v: int) -> list[list[Unit]]:
    """Megatron-LM's interleaved 1F1B with ``v`` model chunks per stage (needs ``m % p == 0``).

    Forward unit ``k`` of a stage is micro-batch ``(k // (p*v)) * p + k % p`` of chunk
    ``(k // p) % v``; backward units run the chunks in reverse. Stage ``s`` warms up with
    ``(p - s - 1) * 2 + (v - 1) * p`` forwards (all of them if that exceeds ``m * v``).
    """
    _check(p, m)
    if v < 1:
        raise ValueError(f"virtual_stages(={v}) must be >= 1")
    if v == 1:
        return one_f_one_b(p, m)
    if m % p:
        raise ValueError(f"the interleaved schedule needs micro_batches(={m}) to be a multiple "
                         f"of pipeline stages(={p})")
    total = m * v

    def fwd(k: int) -> Unit:
        return ("F", (k // (p * v)) * p + k % p, (k // p) % v)

    def bwd(k: int) -> Unit:
        return ("B", (k // (p * v)) * p + k % p, v - 1 - (k // p) % v)

    out = []
    for s in range(p):
        warm = min((p - s - 1) * 2 + (v - 1) * p, total)
        units: list[Unit] = [fwd(k) for k in range(warm)]
        f, b = warm, 0
        while f < total:
            units.append(fwd(f))
            f += 1
            units.append(bwd(b))
            b += 1
        units += [bwd(k) for k in range(b, total)]
        out.append(units)
    return out


def schedule(name: str, p: int, m: int, v: int = 1) -> list[list[Unit]]:
    """The units of every stage for schedule *name* (one of :data:`SCHEDULES`)."""
    if name == "gpipe":
        return gpipe(p, m)
    if name == "1f1b":
        return one_f_one_b(p, m)
    if name == "interleaved":
        return interleaved(p, m, v)
    raise ValueError(f"unknown pipeline schedule {name!r}; valid: {', '.join(SCHEDULES)}")


def upstream(unit: Unit, stage: int, p: int, v: int) -> tuple[int, Unit] | None:
    """The (stage, unit) whose output *unit* on *stage* needs first, or None.

    A forward needs the previous stage's forward of the same micro-batch (for chunk ``c`` on the
    first stage: the last stage's forward of chunk ``c - 1``); a backward needs the next stage's
    backward (on the last stage: the first stage's backward of chunk ``c + 1``; for the very last
    chunk, its own forward).
    """
    phase, mb, c = unit
    if phase == "F":
        if stage > 0:
            return stage - 1, ("F", mb, c)
        return (p - 1, ("F", mb, c - 1)) if c > 0 else None
    if stage < p - 1:
        return stage + 1, ("B", mb, c)
    return (0, ("B", mb, c + 1)) if c < v - 1 else (stage, ("F", mb, c))


def downstream(unit: Unit, stage: int, p: int, v: int) -> tuple[int, Unit] | None:
    """The (stage, unit) that consumes *unit*'s output across a stage boundary, or None."""
    phase, mb, c = unit
    if phase == "F":
        if stage < p - 1:
            return stage + 1, ("F", mb, c)
        return (0, ("F", mb, c + 1)) if c < v - 1 else None
    if stage > 0:
        return stage - 1, ("B", mb, c)
    return (p - 1, ("B", mb, c - 1)) if c > 0 else None


def in_flight(units: list[Unit]) -> int:
    """Most micro-batch chunks whose forward has run and backward has not, on one stage: what
    its activation memory must hold."""
    live = peak = 0
    for phase, _, _ in units:
        live += 1 if phase == "F" else -1
        peak = max(peak, live)
    return peak
