"""Reading scenario files: YAML to a validated, frozen :class:`~hwsim.scenario.schema.Scenario`.

Every problem (missing file, malformed YAML, a schema violation, an unknown catalog id) becomes one
:class:`~hwsim.exceptions.ScenarioError` whose one-paragraph message names the file, the field
path (``workload.parallelism.tp``, ``cluster.storage[0].tier``), the reason and the valid choices.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from hwsim.exceptions import ScenarioError
from hwsim.scenario.calibration import read_calibration
from hwsim.scenario.schema import WORKLOAD_KINDS, Scenario
from hwsim.scenario.schema_cluster import NodeSpec, did_you_mean

__all__ = ["load_scenario", "scenario_to_dict", "read_scenario_yaml", "short_repr",
           "MAX_YAML_NODES", "MAX_YAML_DEPTH",
           "MAX_YAML_BYTES"]

MAX_YAML_NODES = 1_000_000
"""The most values a YAML document may hold once its aliases (``*name``) are expanded."""
MAX_YAML_DEPTH = 100
"""The deepest nesting of mappings and lists a YAML document may have."""
MAX_YAML_BYTES = 16 * 2 ** 20
"""The largest scenario or sweep file read (16 MiB: a scenario is a few kB; an explicit graph of
100,000 links a few MB)."""
_MAX_ERRORS = 3
_NAME = r"[A-Za-z_]\w*(?:\[\d+\])*"
_PATH_PREFIX = re.compile(rf"^({_NAME}(?:\.{_NAME})*): (.+)$", re.S)


class _LimitError(yaml.YAMLError):
    """A document beyond :data:`MAX_YAML_NODES` or :data:`MAX_YAML_DEPTH` (or with a recursive
    alias); its message is the whole explanation."""


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys instead of silently keeping the last one, and
    documents nested deeper than :data:`MAX_YAML_DEPTH` or holding more than
    :data:`MAX_YAML_NODES` values once aliases are expanded (an "alias bomb": a few hundred bytes
    that expand to billions of values)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _LimitError(f"nesting deeper than {MAX_YAML_DEPTH} levels at line "
                                  f"{mark.line + 1}; a scenario nests a few levels (cluster: "
                                  "node: gpu:), so this is not a scenario")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        total = _expanded_size(node)
        if total > MAX_YAML_NODES:
            raise _LimitError(
                f"the document expands to more than {MAX_YAML_NODES:,} values once its aliases "
                "(*name) are expanded; a scenario or sweep holds far fewer, so write the values "
                "out or repeat fewer aliases")
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} cannot be a key (keys are names such as "
                    "gpu: or nodes:)", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {short_repr(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """The number of values under *root* with every alias expanded, without expanding them: an
    alias is the same node object as its anchor, so each node's size is computed once. Stops
    counting past :data:`MAX_YAML_NODES`; a recursive alias (a node inside itself) is refused."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            kids = _children(node)
            size[key] = min(1 + sum(size[id(k)] for k in kids), MAX_YAML_NODES + 1)
            continue
        if key in size:
            continue
        if key in open_:
            raise _LimitError("a recursive alias (an anchor &name used inside its own value); "
                              "a scenario's values are finite, write them out")
        open_.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node) if id(k) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 2, 4, 4, 3
_REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def short_repr(value: Any, width: int = 60) -> str:
    """``repr(value)`` in at most *width* characters, in time and memory bounded whatever
    *value* is (a huge nested structure, an integer of a million digits): for error messages."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails still gets named
        text = f"<{type(value).__name__}>"
    return text if len(text) <= width else text[:width - 3] + "..."


def load_scenario(source: str | Path | dict[str, Any], *, file: str | None = None,
                  check_catalog: bool = True, base_dir: str | Path | None = None) -> Scenario:
    """Read and validate a scenario.

    Parameters
    ----------
    source : str, Path or dict
        A path to a YAML file, or the already-parsed mapping.
    file : str, optional
        The name to show in error messages (default: the path, or none for a mapping).
    check_catalog : bool
        Check every catalog id (devices, links, storage) with :mod:`hwsim.catalog`.
    base_dir : str or Path, optional
        For a mapping: the folder its relative paths (``hf_config``, ``arrivals.trace``) are
        read from, as if it were a file there (a sweep's points are mappings made from a file).

    Returns
    -------
    Scenario
        The validated, frozen scenario. A relative ``workload.model.hf_config`` is resolved
        against the scenario file's directory.

    Raises
    ------
    ScenarioError
        One paragraph naming the file, the field path, the reason and the valid choices.
    """
    base: Path | None = None
    if isinstance(source, dict):
        data: Any = source
        base = Path(base_dir) if base_dir is not None else None
    else:
        path = Path(source)
        file = file or str(path)
        base = path.parent
        data = read_scenario_yaml(path, file)
    if data is None:
        raise ScenarioError("the file is empty; a scenario needs name:, cluster: and workload:",
                            file=file)
    if not isinstance(data, dict):
        raise ScenarioError(f"the top level must be a mapping (name:, cluster:, workload:, ...), "
                            f"not {type(data).__name__}", file=file)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise _convert(err, file) from None
    if check_catalog:
        _check_catalog(scenario, file)
    return _resolve_paths(scenario, base, file)


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """Return *scenario* as plain JSON-able data (SI numbers, lists, strings)."""
    return scenario.model_dump(mode="json")


def read_scenario_yaml(path: Path, file: str) -> Any:
    """The parsed YAML of the scenario file *path* (duplicate keys are errors); *file* names it
    in errors."""
    if not path.exists():
        raise ScenarioError(f"no such scenario file (looked in {str(path.resolve().parent)!r})",
                            file=file)
    if not path.is_file():
        raise ScenarioError("not a file (give a scenario .yaml file)", file=file)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ScenarioError(f"refused: the file is {size / 2 ** 20:,.0f} MiB; a scenario or "
                                f"sweep file is at most {MAX_YAML_BYTES // 2 ** 20} MiB",
                                file=file)
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ScenarioError(f"cannot read the file: {err}", file=file) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(p for p in (err.context, err.problem) if p)
        raise ScenarioError(f"malformed YAML{where}: {what}", file=file) from None
    except _LimitError as err:
        raise ScenarioError(f"refused: {err}", file=file) from None
    except yaml.YAMLError as err:
        raise ScenarioError(f"malformed YAML: {' '.join(str(err).split())}", file=file) from None
    except ValueError:  # int() of a number with more than 4,300 digits
        raise ScenarioError("a number with more than 4,300 digits; no field takes a number "
                            "that large", file=file) from None
    except RecursionError:
        raise ScenarioError("nesting too deep to read", file=file) from None
    except MemoryError:
        raise ScenarioError("refused: not enough memory to read the file", file=file) from None


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in get_args(tp) for m in _models_in(arg)]


def _walk(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """Turn a pydantic ``loc`` into a dotted path (union tags dropped) and the model it ends in."""
    parts: list[str] = []
    cands: list[type[BaseModel]] = [Scenario]
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        tagged = [m for m in cands if "kind" in m.model_fields
                  and item in get_args(m.model_fields["kind"].annotation)]
        if len(cands) > 1 and tagged:
            cands = tagged
            continue
        field = cands[0].model_fields.get(item) if len(cands) == 1 else None
        cands = _models_in(field.annotation) if field is not None else []
        parts.append(("." if parts else "") + str(item))
    return "".join(parts), cands[0] if len(cands) == 1 else None


def _suggest(word: Any, choices: Any) -> str:
    """:func:`did_you_mean` for a short text only (a huge value is nothing like any choice)."""
    return did_you_mean(word, choices) if isinstance(word, str) and len(word) <= 100 else ""


def _reason(err: dict[str, Any]) -> tuple[str, str]:
    """Return the field path and a one-line reason for one pydantic error."""
    loc = tuple(err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        path, _ = _walk(loc)
        _, parent = _walk(loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        return path, (f"unknown key {short_repr(loc[-1])}; valid keys: {', '.join(valid)}"
                      f"{_suggest(loc[-1], valid)}")
    path, _ = _walk(loc)
    if kind == "union_tag_invalid":
        return path, (f"unknown kind {short_repr(ctx.get('tag'))}; valid kinds: "
                      f"{', '.join(WORKLOAD_KINDS)}"
                      f"{_suggest(ctx.get('tag'), WORKLOAD_KINDS)}")
    if kind == "union_tag_not_found":
        return path, f"missing kind; valid kinds: {', '.join(WORKLOAD_KINDS)}"
    if kind == "literal_error":
        choices = [c.strip("'") for c in re.split(r", | or ", str(ctx.get("expected", "")))]
        return path, (f"{short_repr(value)} is not allowed; valid values: {', '.join(choices)}"
                      f"{_suggest(value, choices)}")
    if kind == "missing":
        return path, "required field is missing"
    msg = re.sub(r" or instance of \w+", "", " ".join(str(err["msg"]).split()))
    if kind in ("value_error", "assertion_error"):
        msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
        m = _PATH_PREFIX.match(msg)
        if m:
            sub = m.group(1)
            path = f"{path}.{sub}" if path else sub
            msg = m.group(2)
        return path, msg
    return path, f"{msg[:1].lower()}{msg[1:]} (got {short_repr(value)})"


def _convert(exc: ValidationError, file: str | None) -> ScenarioError:
    errors = exc.errors(include_url=False)
    reasons = [_reason(e) for e in errors]
    field, first = reasons[0]
    rest = [f"{p}: {r}" if p else r for p, r in reasons[1:_MAX_ERRORS]]
    message = "; also ".join([first, *rest])
    if len(reasons) > _MAX_ERRORS:
        message += f" (and {len(reasons) - _MAX_ERRORS} more errors)"
    return ScenarioError(message, file=file, field=field or None)


def _catalog_refs(s: Scenario) -> Iterator[tuple[str, str, str]]:
    """Yield (field path, catalog section, id) for every catalog id in *s*; a device section
    names the device kind expected there (``device:gpu``)."""
    def node_refs(prefix: str, node: NodeSpec) -> Iterator[tuple[str, str, str]]:
        for name, section in (("gpu", "device:gpu"), ("tpu", "device:tpu"), ("cpu", "device:cpu"),
                              ("intra_node", "link"), ("host_link", "link"), ("nic", "link"),
                              ("local_storage", "storage"), ("host_memory", "storage")):
            if getattr(node, name) is not None:
                yield f"{prefix}.{name}", section, getattr(node, name)

    c = s.cluster
    parts = [("cluster", c)] if c.form == "builder" else []
    parts += [(f"cluster.sites[{i}]", x) for i, x in enumerate(c.sites or [])]
    for prefix, part in parts:
        node, fabric, storage = part.node, part.fabric, part.storage
        if node is not None:
            yield from node_refs(f"{prefix}.node", node)
        for j, g in enumerate(part.groups or []):
            yield from node_refs(f"{prefix}.groups[{j}].node", g.node)
        if fabric is not None and fabric.link is not None:
            yield f"{prefix}.fabric.link", "link", fabric.link
        for i, e in enumerate(storage):
            yield f"{prefix}.storage[{i}].tier", "storage", e.tier
            if e.link is not None:
                yield f"{prefix}.storage[{i}].link", "link", e.link
    for i, w in enumerate(c.wan or []):
        yield f"cluster.wan[{i}].link", "link", w.link
    sections = {"gpu": "device:gpu", "tpu": "device:tpu", "cpu": "device:cpu",
                "memory": "storage", "storage": "storage"}
    for i, n in enumerate(c.graph.nodes if c.graph else []):
        if n.spec is not None and n.kind in sections:
            yield f"cluster.graph.nodes[{i}].spec", sections[n.kind], n.spec
    for i, link in enumerate(c.graph.links if c.graph else []):
        yield f"cluster.graph.links[{i}].link", "link", link.link


def _check_catalog(scenario: Scenario, file: str | None) -> None:
    from hwsim import catalog

    lookups: dict[str, Callable[[str], Any]] = {
        "device": catalog.get_device, "link": catalog.get_link, "storage": catalog.get_storage}
    for path, ref, ident in _catalog_refs(scenario):
        section, _, kind = ref.partition(":")
        try:
            spec = lookups[section](ident)
        except ScenarioError as err:
            if err.file:  # a broken catalog file, not an unknown id: keep its own location
                raise
            raise ScenarioError(err.reason, file=file, field=path) from None
        found = getattr(spec, "kind", kind)
        if kind and found != kind:
            raise ScenarioError(f"{ident!r} is a {found}, not a {kind}; give a {kind} id from "
                                f"`hwsim catalog devices`", file=file, field=path)


def _resolve_paths(scenario: Scenario, base: Path | None, file: str | None) -> Scenario:
    """Every workload's relative paths (``model.hf_config``, ``arrivals.trace``) made absolute
    (relative to the scenario's folder) and checked: ``workload``'s or each job's; and the
    ``calibration`` file, made absolute and validated."""
    if scenario.calibration is not None:
        path = Path(scenario.calibration).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        read_calibration(path, scenario=file)
        scenario = scenario.model_copy(update={"calibration": str(path)})
    if scenario.jobs is None:
        return scenario.model_copy(update={"workload": _resolve_workload(
            scenario.workload, "workload", base, file)})
    jobs = [j.model_copy(update={"workload": _resolve_workload(
        j.workload, f"jobs[{i}].workload", base, file)}) for i, j in enumerate(scenario.jobs)]
    return scenario.model_copy(update={"jobs": jobs})


def _resolve_workload(w: Any, prefix: str, base: Path | None, file: str | None) -> Any:
    w = _resolve_trace(_resolve_hf_config(w, prefix, base, file), prefix, base, file)
    sp = getattr(w, "speculative", None)
    if sp is None or sp.draft_model is None or sp.draft_model.hf_config is None:
        return w
    draft = sp.draft_model.model_copy(update={"hf_config": _config_path(
        sp.draft_model.hf_config, f"{prefix}.speculative.draft_model.hf_config", base, file)})
    return w.model_copy(update={"speculative": sp.model_copy(update={"draft_model": draft})})


def _resolve_trace(w: Any, prefix: str, base: Path | None, file: str | None) -> Any:
    """An inference trace path made absolute (relative to the scenario's folder) and checked."""
    trace = getattr(getattr(w, "arrivals", None), "trace", None)
    if trace is None:
        return w
    path = Path(trace).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ScenarioError(f"no such request trace {str(path)!r} (a CSV with columns arrival_s, "
                            "prompt_tokens, output_tokens; a relative path is read from the "
                            "scenario's folder)", file=file, field=f"{prefix}.arrivals.trace")
    arrivals = w.arrivals.model_copy(update={"trace": str(path)})
    return w.model_copy(update={"arrivals": arrivals})


def _resolve_hf_config(w: Any, prefix: str, base: Path | None, file: str | None) -> Any:
    if getattr(w, "model", None) is None or w.model.hf_config is None:
        return w
    path = _config_path(w.model.hf_config, f"{prefix}.model.hf_config", base, file)
    return w.model_copy(update={"model": w.model.model_copy(update={"hf_config": path})})


def _config_path(config: str, field: str, base: Path | None, file: str | None) -> str:
    """A Hugging Face config path made absolute (relative to the scenario's folder), checked."""
    path = Path(config).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ScenarioError(f"no such Hugging Face config file {str(path)!r} (a config.json; a "
                            "relative path is read from the scenario's folder)", file=file,
                            field=field)
    return str(path)
