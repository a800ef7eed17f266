"""The result of one run: a summary and tidy DataFrames, no SimPy objects.

Building and saving are separate: a run returns a :class:`Result` and writes nothing;
:meth:`Result.save` (called by ``hwsim run --out DIR``) writes the files of DESIGN.md "Results".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from hwsim.columnar import Table

if TYPE_CHECKING:
    import pandas as pd

_FRAMES = ("events", "utilization", "memory", "bottleneck", "requests", "iterations",
           "failures", "loads", "steps")

__all__ = ["Result", "EVENT_COLUMNS", "UTILIZATION_COLUMNS", "MEMORY_COLUMNS", "BOTTLENECK_COLUMNS",
           "LOAD_COLUMNS"]

EVENT_COLUMNS = ("start_s", "end_s", "resource", "kind", "name", "job", "rank", "bytes", "flops",
                 "category")
"""``events``: one row per simulated activity. ``resource`` is a device stream
(``n0.gpu0/compute``), a flow (``flow``) or a storage tier; ``kind`` is ``compute``, ``flow``,
``storage``, ``host``...; ``category`` is the bottleneck class the activity counts toward
(``compute``, ``memory``, ``comm:<link class>``, ``storage``, ``host``)."""
UTILIZATION_COLUMNS = ("time_s", "bin_s", "resource", "resource_class", "utilization",
                       "bytes")
"""``utilization``: per resource (link direction, storage channel, device stream) and time bin, the
busy fraction in [0, 1] and the bytes carried in the bin."""
MEMORY_COLUMNS = ("time_s", "resource", "used_bytes", "capacity_bytes")
"""``memory``: level of each memory pool after every change."""
BOTTLENECK_COLUMNS = ("category", "seconds", "share")
"""``bottleneck``: the critical-path time by category; shares sum to 1."""
LOAD_COLUMNS = ("time_s", "resource", "resource_class", "load_bytes_per_s", "capacity_bytes_per_s")
"""``loads``: the load of each shared channel (link direction, storage channel) from ``time_s``
until that resource's next row; what :func:`hwsim.analysis.utilization` integrates."""


@dataclass
class Result:
    """Summary and DataFrames of one simulated scenario.

    Attributes
    ----------
    name : str
        The scenario's name.
    summary : dict
        Flat keys with units in their names (DESIGN.md "Results"), JSON-serialisable.
    events, utilization, memory, bottleneck : pandas.DataFrame
        Columns as in :data:`EVENT_COLUMNS`, :data:`UTILIZATION_COLUMNS`, :data:`MEMORY_COLUMNS`,
        :data:`BOTTLENECK_COLUMNS`. A frame may be given as a
        :class:`~hwsim.columnar.Table` or as a function that builds one (or a DataFrame):
        the DataFrame is then built on first access, once (a large run's full event table costs
        seconds that a caller who wants the summary need not pay; :meth:`save` writes the
        files from the Tables, without pandas).
    config : dict
        The validated scenario the run used, as plain data.
    requests : pandas.DataFrame
        Serving runs: one row per request (:data:`hwsim.analysis.serving.REQUEST_COLUMNS`);
        empty otherwise.
    iterations : pandas.DataFrame
        Serving runs: one row per scheduler iteration of every replica (``replica, start_s,
        end_s, batch_size, tokens, kv_blocks_used, prefill_tokens, kv_blocked,
        kv_blocks_total, kv_blocks_cached, kv_blocks_cached_idle``): the batch-size and
        KV-usage timelines (the last two: prefix caching's shared blocks, and those of them no
        sequence uses); empty otherwise.
    failures : pandas.DataFrame
        Training runs with ``workload.failures`` (or a checkpoint interval): one row per failure
        of the whole run (``time_s, component, cause, lost_s, downtime_s, step``;
        :data:`hwsim.jobs.resilience.FAILURE_COLUMNS`), possibly none; without columns
        otherwise.
    loads : pandas.DataFrame
        The channels' load over time (:data:`LOAD_COLUMNS`): a step function per channel, exact,
        so utilization can be taken at any resolution (:func:`hwsim.analysis.utilization`).
    slots : dict
        Streams that are pools of several slots (a server's CPU threads): name -> slots.
    device_specs : dict
        Compute device node -> catalog id, for every gpu, tpu and cpu node of the cluster
        (energy in :func:`hwsim.analysis.resource_summary`).
    steps : pandas.DataFrame
        Training runs: one row per simulated step (``job, step, start_s, end_s``: the slowest
        rank's step ends; the first step starts at the job's start); empty otherwise.
    record : str
        What the run kept of its events (``outputs.record``): ``ops`` or ``full``, every
        activity; ``summary``, none for the user: reading ``events`` then raises
        :class:`~hwsim.exceptions.HwsimError` saying so (the summary, ``bottleneck``,
        ``utilization``, ``loads`` and ``memory`` are all there), and :meth:`save` writes
        neither events.parquet nor trace.json.
    event_batches : callable, optional
        Returns the events as sorted Tables (:class:`~hwsim.columnar.Table`) of a bounded
        number of rows, each with the categories of the whole (their concatenation is
        ``events``): what :meth:`save` streams into events.parquet and trace.json. None:
        :meth:`save` writes ``events``.
    release : callable, optional
        Called once the events are in their file: frees what held them (a spill file).
    """

    name: str
    summary: dict[str, Any]
    events: pd.DataFrame = field(repr=False)
    utilization: pd.DataFrame = field(repr=False)
    memory: pd.DataFrame = field(repr=False)
    bottleneck: pd.DataFrame = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    requests: pd.DataFrame = field(default_factory=Table, repr=False)
    iterations: pd.DataFrame = field(default_factory=Table, repr=False)
    failures: pd.DataFrame = field(default_factory=Table, repr=False)
    loads: pd.DataFrame = field(default_factory=Table, repr=False)
    slots: dict[str, int] = field(default_factory=dict, repr=False)
    device_specs: dict[str, str] = field(default_factory=dict, repr=False)
    steps: pd.DataFrame = field(default_factory=Table, repr=False)
    record: str = "ops"
    event_batches: Callable[[], Iterator[Table]] | None = field(default=None, repr=False,
                                                                compare=False)
    release: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __getattribute__(self, key: str) -> Any:
        value = object.__getattribute__(self, key)
        if key in _FRAMES and (callable(value) or isinstance(value, Table)):
            value = Result.table(self, key)
            if isinstance(value, Table):
                value = value.to_pandas()
            object.__setattr__(self, key, value)
        return value

    def table(self, name: str) -> Table:
        """Frame *name* as a :class:`~hwsim.columnar.Table`, without building the DataFrame
        when it has not been (what the writers read)."""
        value = object.__getattribute__(self, name)
        if callable(value) and not isinstance(value, Table):
            value = value()
            object.__setattr__(self, name, value)
        return Table.of(value)

    def save(self, out_dir: str | Path) -> Path:
        """Write summary.json, events.parquet, utilization.parquet, memory.parquet,
        bottleneck.csv, trace.json and scenario.json into *out_dir*, atomically (see
        :func:`hwsim.analysis.export.write_result`). Returns the directory."""
        from hwsim.analysis.export import write_result

        return write_result(self, out_dir)
