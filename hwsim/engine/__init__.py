"""The engine: SimPy time, shared-bandwidth flows, device streams, byte pools, the recorder.

Knows time, capacity and bytes only; nothing of GPUs, models or jobs.
"""

from __future__ import annotations

from hwsim.engine.flows import (RECOMPUTE_PRIORITY, Channel, Flow, FlowNetwork, FlowPath,
                                Reservation)
from hwsim.engine.pool import OutOfCapacity, Pool
from hwsim.engine.recorder import STREAM_KINDS, Recorder
from hwsim.engine.streams import Stream

__all__ = ["FlowNetwork", "Flow", "Channel", "FlowPath", "Reservation", "RECOMPUTE_PRIORITY",
           "Pool", "OutOfCapacity", "Recorder", "STREAM_KINDS", "Stream"]
