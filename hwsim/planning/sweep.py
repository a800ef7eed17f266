"""Sweep files: a base scenario, axes over its field paths, constraints, objectives, outputs.

A :class:`SweepSpec` (its schema: :mod:`hwsim.planning.sweep_spec`) is read from YAML
(:func:`load_sweep`) or given as a mapping; :func:`points`
expands it into a deterministic list of :class:`Point` s, each a complete scenario mapping with a
stable id (a hash of that scenario) and, when a constraint rejects it, the reason. Running the
points is :mod:`hwsim.planning.execute`'s job. docs/sweeps.md documents the format.

Constraints (:mod:`hwsim.planning.constraints`) are arithmetic over the field paths of the
point's scenario, evaluated by a small bounded interpreter; nothing is ever passed to :func:`eval`.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ValidationError

from hwsim.exceptions import ScenarioError
from hwsim.planning.constraints import TooLarge, evaluate, parse_constraint
from hwsim.planning.sweep_spec import (DEFAULT_OUTPUTS, MAX_POINTS, Axis, Objective, Point,
                                       Range, SweepSpec)
from hwsim.scenario.loader import short_repr
from hwsim.scenario.schema import Scenario
from hwsim.scenario.schema_cluster import did_you_mean

__all__ = ["SweepSpec", "Axis", "Range", "Objective", "Point", "load_sweep", "points",
           "parse_constraint", "DEFAULT_OUTPUTS", "MAX_POINTS"]

# --- reading --------------------------------------------------------------------------------

def load_sweep(source: str | Path | dict[str, Any] | SweepSpec, *,
               file: str | None = None) -> SweepSpec:
    """Read and check a sweep: a YAML file, a mapping or a :class:`SweepSpec`.

    A relative ``base`` path is made absolute (relative to the sweep file's folder, or the
    current folder for a mapping). Checked before anything runs: the schema, every axis path
    against the scenario schema, every constraint's syntax and names, the base file, and the
    first point as a scenario (an error there that no axis explains is the base's).

    Raises
    ------
    ScenarioError
        One paragraph naming the sweep file, the field (``axes[1].path``, ``constraints[0]``)
        and what would be valid.
    """
    if isinstance(source, SweepSpec):
        spec, folder = source, Path.cwd()
    else:
        folder = Path.cwd()
        if isinstance(source, dict):
            data: Any = source
        else:
            path = Path(source)
            file = file or str(path)
            folder = path.resolve().parent
            data = read_scenario_yaml(path, file)
        if not isinstance(data, dict):
            raise ScenarioError("a sweep file is a mapping with base:, axes: and optionally "
                                "mode:, n:, seed:, constraints:, objectives:, outputs:", file=file)
        try:
            spec = SweepSpec.model_validate(data)
        except ValidationError as err:
            raise _convert(err, file) from None
    if isinstance(spec.base, str):
        base = Path(spec.base).expanduser()
        spec = spec.model_copy(update={"base": str(base if base.is_absolute() else
                                                   (folder / base).resolve())})
    _check_paths(spec, file)
    _check_first_point(spec, file)
    return spec


def read_scenario_yaml(path: Path, file: str) -> Any:
    """The parsed YAML of a sweep (or base scenario) file, with the scenario loader's limits
    (duplicate keys, alias bombs, deep nesting: one-paragraph errors)."""
    from hwsim.scenario.loader import read_scenario_yaml as read

    if not path.is_file():
        raise ScenarioError("no such sweep file", file=file)
    return read(path, file)


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|dict\[.*\]|list\[.*\]|function-.*)$")
"""The pydantic ``loc`` items that name a union member, not a field."""


def _convert(err: ValidationError, file: str | None) -> ScenarioError:
    """The first pydantic error as one ScenarioError naming its field path (an unknown key
    first: a misspelled key also makes the right one missing)."""
    e = sorted(err.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = [x for x in e["loc"] if not (isinstance(x, str) and _UNION_TAG.match(x))]
    path = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc).lstrip(".")
    msg = " ".join(str(e["msg"]).split())
    if e["type"] == "extra_forbidden":
        model = _model_at(SweepSpec, loc[:-1])
        valid = sorted(model.model_fields) if model else []
        msg = (f"unknown key {short_repr(loc[-1])}; valid keys: {', '.join(valid)}"
               f"{did_you_mean(loc[-1], valid) if isinstance(loc[-1], str) else ''}")
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif e["type"] in ("value_error", "assertion_error"):
        msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
        m = re.match(r"^([\w\[\]\.]+): (.+)$", msg, re.S)
        if m and not path:
            path, msg = m.group(1), m.group(2)
    else:
        msg = f"{msg[:1].lower()}{msg[1:]} (got {short_repr(e.get('input'))})"
    return ScenarioError(msg, file=file, field=path or None)


def _model_at(root: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for item in loc:
        if isinstance(item, int) or model is None:
            continue
        field = model.model_fields.get(item)
        models = _models_in(field.annotation) if field else []
        model = models[0] if len(models) == 1 else None
    return model


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in get_args(tp) for m in _models_in(arg)]


def _free_form(tp: Any) -> bool:
    """Whether *tp* admits a mapping with any keys (``dict[...]`` somewhere in it)."""
    return get_origin(tp) is dict or tp is dict or any(_free_form(a) for a in get_args(tp))


_SEGMENT = re.compile(r"^([A-Za-z_]\w*)((?:\[\d+\])*)$")


def split_path(path: str) -> list[str | int]:
    """``"jobs[0].workload.global_batch"`` -> ``["jobs", 0, "workload", "global_batch"]``;
    raises ValueError for a malformed path."""
    out: list[str | int] = []
    for seg in path.split("."):
        m = _SEGMENT.match(seg)
        if not m:
            raise ValueError(f"{path!r} is not a field path (dotted names with optional [index], "
                             "e.g. workload.parallelism.tp or cluster.storage[0].tier)")
        out.append(m.group(1))
        out += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return out


def _check_schema_path(path: str) -> None:
    """Raise ValueError unless *path* names a field of the scenario schema (any workload kind)."""
    parts = split_path(path)
    cands: list[type[BaseModel]] = [Scenario]
    done: list[str] = []
    for seg in parts:
        if isinstance(seg, int):
            continue
        here = ".".join(done) or "the top level"
        if not cands:
            raise ValueError(f"{path!r}: {here} is a value, not a mapping, so it has no field "
                             f"{seg!r}")
        fields = [m.model_fields[seg] for m in cands if seg in m.model_fields]
        if not fields:
            valid = sorted({k for m in cands for k in m.model_fields})
            raise ValueError(f"{path!r}: unknown field {seg!r} under {here}; valid keys: "
                             f"{', '.join(valid)}{did_you_mean(seg, valid)}")
        if any(_free_form(f.annotation) for f in fields):
            return  # a free-form mapping: any keys below
        cands = [m for f in fields for m in _models_in(f.annotation)]
        done.append(seg)


def _check_paths(spec: SweepSpec, file: str | None) -> None:
    """Every axis path (and every leaf of its mapping values) is a schema field; no two axes set
    the same field or one inside the other."""
    owners: list[tuple[int, str]] = []
    for i, axis in enumerate(spec.axes):
        leaves = _leaves(axis)
        try:
            for leaf in [axis.path, *leaves]:
                _check_schema_path(leaf)
        except ValueError as err:
            raise ScenarioError(str(err), file=file, field=f"axes[{i}].path") from None
        for leaf in leaves:
            for j, other in owners:
                if j != i and (leaf == other or leaf.startswith((other + ".", other + "["))
                               or other.startswith((leaf + ".", leaf + "["))):
                    raise ScenarioError(f"{leaf!r} is set by axes[{j}] too; give each field "
                                        "one axis", file=file, field=f"axes[{i}].path")
        owners += [(i, leaf) for leaf in leaves]


def _leaves(axis: Axis) -> list[str]:
    """The input columns an axis produces: its path, or the leaves of its mapping values."""
    if axis.values is None:  # a range: numbers
        return [axis.path]
    cols: dict[str, None] = {}
    for v in axis.values:
        for k in (_flatten(v) if isinstance(v, dict) else {"": v}):
            cols[axis.path + ("." + k if k else "")] = None
    return list(cols)


def _axis_leaves(spec: SweepSpec) -> list[str]:
    """Every input column the axes produce."""
    return list(dict.fromkeys(leaf for axis in spec.axes for leaf in _leaves(axis)))


def _names(spec: SweepSpec, base: dict[str, Any]) -> list[str]:
    """Names a constraint may use: the axes' columns, ``|``, the base's other fields."""
    axes = _axis_leaves(spec)
    return [*axes, "|", *(k for k in _flatten(base) if k not in axes)]


def _check_first_point(spec: SweepSpec, file: str | None) -> None:
    from hwsim.scenario.loader import load_scenario

    for i, text in enumerate(spec.constraints):  # syntax first: no base file needed
        try:
            parse_constraint(text)
        except ValueError as err:
            raise ScenarioError(str(err), file=file, field=f"constraints[{i}]") from None
    base, base_dir, label = base_scenario(spec, file)
    first = [a.choices()[0] if a.choices() else a.range.sample(np.array([0.0]))[0]
             for a in spec.axes]
    scenario = _apply(base, spec.axes, first, label)
    try:
        load_scenario(scenario, file=label, base_dir=base_dir)
    except ScenarioError as err:
        if err.field and any(err.field == a.path or err.field.startswith(a.path + ".")
                             or err.field.startswith(a.path + "[") for a in spec.axes):
            return  # the first value of an axis is bad: that point is infeasible, not the spec
        raise ScenarioError(f"the base scenario with the axes' first values is invalid: "
                            f"{err.field + ': ' if err.field else ''}{err.reason}", file=label,
                            field=None) from None
    flat = _flatten(scenario)
    for i, text in enumerate(spec.constraints):
        try:
            names = parse_constraint(text, _names(spec, base))[1]
        except ValueError as err:
            raise ScenarioError(str(err), file=file, field=f"constraints[{i}]") from None
        missing = [n for n in names if n not in flat]
        if missing:
            raise ScenarioError(f"{missing[0]!r} has no value in the scenario (neither an axis "
                                f"nor the base sets it); names available: "
                                f"{', '.join(_axis_leaves(spec))}", file=file,
                                field=f"constraints[{i}]")
        try:  # an expression beyond the limits on the first point: the spec's error
            evaluate(parse_constraint(text, _names(spec, base))[0], flat)
        except TooLarge as err:
            raise ScenarioError(f"{short_repr(text, 100)}: {err}", file=file,
                                field=f"constraints[{i}]") from None
        except (ValueError, TypeError, ArithmeticError):
            pass  # e.g. a division by zero at this point only: that point's reason


def base_scenario(spec: SweepSpec, file: str | None = None
                  ) -> tuple[dict[str, Any], str | None, str]:
    """The base scenario mapping, the folder its relative paths are read from, and the name to
    show in its errors."""
    if isinstance(spec.base, dict):
        return spec.base, None, f"{file or spec.name}: base"
    path = Path(spec.base)
    if not path.is_file():
        raise ScenarioError(f"no such base scenario file {str(path)!r}", file=file, field="base")
    data = read_scenario_yaml(path, str(path))
    if not isinstance(data, dict):
        raise ScenarioError("the top level must be a mapping (name:, cluster:, workload:, ...)",
                            file=str(path))
    return data, str(path.parent), str(path)


# --- expansion ------------------------------------------------------------------------------

def points(spec: SweepSpec | str | Path | dict[str, Any]) -> list[Point]:
    """Expand *spec* into its points, deterministically.

    ``grid``: every combination of the axes' values, the last axis varying fastest. ``random``:
    *n* draws, each axis independently (uniform over a list or a discrete range, uniform -- or
    log-uniform -- over a continuous range), from ``numpy.random.default_rng(seed)``. ``lhs``:
    a Latin hypercube of *n* draws: each axis's [0, 1) is cut into *n* strata, each stratum used
    once, in an independent random order per axis; a continuous range maps its stratum to a value
    inside it, a list of *k* values (or a discrete range) maps strata to values in *k* equal runs,
    so each value is drawn n/k times (rounded). Draws that repeat a point (same scenario) are
    kept once, so random and lhs sweeps over short lists may have fewer than *n* points.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    base, _, label = base_scenario(spec)
    if spec.mode == "grid":
        choices = [a.choices() for a in spec.axes]
        total = math.prod(len(c) for c in choices)
        if total > MAX_POINTS:
            raise ScenarioError(f"the grid has {total:,} points, more than {MAX_POINTS:,}; use "
                                "mode: random or lhs with n", field="axes")
        combos: list[list[Any]] = [list(c) for c in itertools.product(*choices)]
    else:
        rng = np.random.default_rng(spec.seed)
        columns = [_draw(a, spec.n, spec.mode, rng) for a in spec.axes]
        combos = [list(c) for c in zip(*columns)]
    names = _names(spec, base)
    parsed = [(text, *parse_constraint(text, names)) for text in spec.constraints]
    out: list[Point] = []
    seen: set[str] = set()
    for combo in combos:
        scenario = _apply(base, spec.axes, combo, label)
        pid = point_id(scenario)
        if pid in seen:
            continue
        seen.add(pid)
        inputs: dict[str, Any] = {}
        for axis, value in zip(spec.axes, combo):
            if isinstance(value, dict):
                inputs.update({f"{axis.path}.{k}": v for k, v in _flatten(value).items()})
            else:
                inputs[axis.path] = value
        out.append(Point(pid, inputs, scenario, _constraint_reason(parsed, scenario)))
    return out


def _draw(axis: Axis, n: int, mode: str, rng: np.random.Generator) -> list[Any]:
    choices = axis.choices()
    if mode == "lhs":
        u = (rng.permutation(n) + rng.random(n)) / n
    else:
        u = rng.random(n)
    if choices is None:
        return axis.range.sample(u)
    idx = np.minimum((u * len(choices)).astype(int), len(choices) - 1)
    return [choices[i] for i in idx]


def point_id(scenario: dict[str, Any]) -> str:
    """A point's id: the first 16 hex digits of the SHA-256 of its scenario as canonical JSON;
    the same scenario gives the same id in any sweep."""
    text = json.dumps(scenario, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _apply(base: dict[str, Any], axes: list[Axis], values: list[Any], label: str
           ) -> dict[str, Any]:
    out = json.loads(json.dumps(base, default=str))  # a deep copy of plain data
    for axis, value in zip(axes, values):
        _set(out, split_path(axis.path), value, axis.path, label)
    return out


def _set(data: Any, parts: list[str | int], value: Any, path: str, label: str) -> None:
    """Set *value* at *parts* in *data*, creating missing mappings; a mapping value is merged."""
    node = data
    for depth, seg in enumerate(parts):
        last = depth == len(parts) - 1
        where = path if last else ".".join(str(p) for p in parts[:depth + 1])
        if isinstance(seg, int):
            if not isinstance(node, list) or seg >= len(node):
                raise ScenarioError(f"{path!r}: the base has no item [{seg}] there", file=label)
        elif not isinstance(node, dict):
            raise ScenarioError(f"{path!r}: the base's value above {where!r} is "
                                f"{short_repr(node)}, not a mapping (write it as one, e.g. "
                                "model: {preset: gpt3-175b})", file=label)
        if last:
            if isinstance(value, dict) and isinstance(node[seg] if isinstance(seg, int)
                                                      else node.get(seg), dict):
                _merge(node[seg], value)
            else:
                node[seg] = json.loads(json.dumps(value, default=str))
            return
        if isinstance(seg, str) and node.get(seg) is None:
            node[seg] = {}
        node = node[seg]


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = json.loads(json.dumps(v, default=str))


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of nested mappings and lists as ``{"a.b[0].c": value}``."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(data, list) and any(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            out.update(_flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = data
    return out


def _constraint_reason(parsed: list[tuple[str, ast.Expression, list[str]]],
                       scenario: dict[str, Any]) -> str | None:
    if not parsed:
        return None
    flat = _flatten(scenario)
    for text, tree, _ in parsed:
        try:
            ok = evaluate(tree, flat)
        except (ValueError, TypeError, ArithmeticError) as err:
            return f"constraint: {text}: {err}"
        if not ok:
            return f"constraint: {text}"
    return None
