"""Calibration from the user's own measurements (``hwsim calibrate``, docs/calibration.md):
measured runs, nccl-tests output and Kineto traces fitted into a calibration file that a
scenario names (``calibration: FILE``).

This package sits above the scenario front (it loads and runs scenarios), beside
:mod:`hwsim.planning`; :func:`calibrate` is ``hwsim.calibrate`` in the public API.
"""

from __future__ import annotations

from hwsim.calibration.core import Calibration, Fitted, calibrate

__all__ = ["calibrate", "Calibration", "Fitted"]
