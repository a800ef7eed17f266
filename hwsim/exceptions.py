"""Exceptions raised by hwsim. Imports nothing from hwsim.

``HwsimError`` is the base. ``ScenarioError`` is bad input (a malformed or invalid scenario, an
unknown catalog id); ``InfeasibleError`` is valid input that cannot run as asked; ``NoRouteError``
is an infeasible transfer between two nodes of a topology that no path joins; ``BudgetError``
is a scenario refused before it runs because its estimated size or event count exceeds the budget.

The command line maps them to exit statuses (README, ``hwsim --help``): 1 for every
``HwsimError`` except ``BudgetError`` (4); a run whose job does not fit exits 3.
"""

from __future__ import annotations

__all__ = ["HwsimError", "ScenarioError", "InfeasibleError", "NoRouteError",
           "BudgetError"]


class HwsimError(Exception):
    """Base class of every error hwsim raises on purpose."""


class ScenarioError(HwsimError, ValueError):
    """Bad input: the message names the file (when known), the field path and the valid choices."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None) -> None:
        self.file = file
        self.field = field
        self.reason = message
        prefix = ""
        if file:
            prefix += f"{file}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)


class InfeasibleError(HwsimError):
    """Valid input that cannot run as asked (e.g. a parallelism that does not divide the devices)."""


class NoRouteError(InfeasibleError):
    """No path joins two nodes of a topology."""

    def __init__(self, src: object, dst: object, detail: str = "") -> None:
        self.src = src
        self.dst = dst
        msg = f"no route from {src!r} to {dst!r} in the topology"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class BudgetError(HwsimError):
    """A scenario refused before it runs: its estimated size or event count is beyond the budget.

    The message gives the estimate, the limit and how to raise it (``--max-events``, the
    scenario's ``limits:``)."""
