"""Scenario schema, failures of a training run (``workload.failures``): failure rates (a named
profile or a mean time between failures per component), scripted failures, how a failure is
detected and recovered from, and checkpoint overrides. Re-exported by
:mod:`hwsim.scenario.schema`; ``docs/scenarios.md`` documents every field and docs/model.md
("Failures and whole runs") the model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from hwsim.catalog.failures import COMPONENTS, PROFILES
from hwsim.scenario.schema_cluster import Count, Duration, PosInt, StrictModel, _quantity

__all__ = ["Failures", "Mtbf", "ScriptedFailureEntry", "FAILURE_PROFILES"]

FAILURE_PROFILES = ("none",) + PROFILES
"""Values of ``failures.profile``."""
Lifetime = Annotated[float, _quantity("time"), Field(gt=0)]
"""Seconds, > 0 (a mean time between failures): a number or a string such as ``"50000 h"``."""
Component = Literal[COMPONENTS]  # type: ignore[valid-type]


class Mtbf(StrictModel):
    """Mean time between failures of ONE unit of each component class (a GPU, a server, a NIC, a
    fabric link, a fabric switch, a storage device or tier); ``software``: of the whole job."""

    gpu: Lifetime | None = None
    node: Lifetime | None = None
    nic: Lifetime | None = None
    link: Lifetime | None = None
    switch: Lifetime | None = None
    storage: Lifetime | None = None
    software: Lifetime | None = None


class ScriptedFailureEntry(StrictModel):
    """A failure of ``component`` at wall time ``at`` after the run starts, counted under
    ``cause`` (default: the component's name)."""

    at: Duration
    component: Component
    cause: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")

    @model_validator(mode="after")
    def _cause(self) -> ScriptedFailureEntry:
        if self.cause == "total":
            raise ValueError("cause 'total' is taken by failures_total; choose another name")
        return self


class Failures(StrictModel):
    """Failures during a whole training run, played at run scale after the steady-state steps
    (docs/model.md, "Failures and whole runs").

    Rates come from ``profile`` (``llama3``: Llama 3 405B's 54-day interruption causes, scaled
    to this job's GPUs and servers) or from ``mtbf`` per component, not both; ``scripted`` adds
    failures at given times. ``policy: spares`` restarts on a spare server (``spares`` of them,
    null = always one; a failed server is a spare again ``repair`` later); ``shrink`` drops the
    lost server's data-parallel replicas and goes on with fewer. ``checkpoint_every_steps``,
    ``checkpoint_stall`` and ``restore`` override what the workload's checkpoint gives.
    """

    profile: Literal[FAILURE_PROFILES] = "none"  # type: ignore[valid-type]
    mtbf: Mtbf | None = None
    scripted: list[ScriptedFailureEntry] = []
    detect: Duration = 0.0
    reschedule: Duration = 0.0
    policy: Literal["spares", "shrink"] = "spares"
    spares: Count | None = None
    repair: Duration | None = None
    checkpoint_every_steps: PosInt | None = None
    checkpoint_stall: Duration | None = None
    restore: Duration | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Failures:
        if self.profile != "none" and self.mtbf is not None:
            raise ValueError(f"give profile or mtbf, not both (profile {self.profile!r} already "
                             "sets a rate for every component it names)")
        if self.spares is not None and self.policy != "spares":
            raise ValueError("spares applies to policy: spares; policy: shrink uses no spares")
        if self.spares is not None and self.repair is None:
            raise ValueError(f"spares: {self.spares} needs repair (how long a failed server "
                             "takes to become a spare again), e.g. repair: \"3 d\"")
        return self
