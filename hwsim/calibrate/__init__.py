"""Calibration from the user's own measurements (``hwsim calibrate``, docs/calibration.md):
measured runs, nccl-tests output and Kineto traces fitted into a calibration file that a
scenario names (``calibration: FILE``).

This package sits above the scenario front (it loads and runs scenarios), beside
:mod:`hwsim.planning`. ``hwsim.calibrate`` (the attribute of the top-level package) is the
function :func:`calibrate`; import this package's modules with ``from hwsim.calibrate.X import``.
"""

from __future__ import annotations

from hwsim.calibrate.core import Calibration, Fitted, calibrate

__all__ = ["calibrate", "Calibration", "Fitted"]
