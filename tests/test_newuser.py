"""What a new user runs first: every ``hwsim`` subcommand's ``--help``, every example command of
README.md and docs/*.md, and the README's Python snippet, through the real entry point
(``python -m hwsim.cli`` in a subprocess) in a temporary copy of the repository's files: no
traceback, and exit status 0 (issue 12, "new user" test).

Nothing here lists the commands: the subcommands come from the typer app, the examples from the
documents, so a new subcommand or a new example is tested when it is written. An example is a
line of a fenced or indented code block that starts with ``hwsim `` or ``.venv/bin/hwsim `` (or
has one after ``&&``), with its ``\\`` continuation lines. Rules:

- what follows ``#`` is a comment; a comment ``exit status N`` (or ``exit N``) documents the
  status the command ends with, else it is 0;
- ``[...]`` groups are usage notation for optional arguments and are left out;
- a command with a placeholder (a word of capitals standing alone: ``FILE``, ``DIR``,
  ``RUN_DIR``, ``tcp://HOST:PORT``; capitals inside an id such as ``EPYC-7742`` are not one) is
  skipped: it needs the reader's own file, folder or cluster;
- globs (``scenarios/*.yaml``) are expanded as a shell would;
- a command that reads another example's ``--out`` folder (``hwsim report runs/pcie``) runs
  after it: the examples of one run share one folder, a copy of the top-level paths they name.

Long examples run smaller by default and as written with ``-m benchmark``: ``SMALLER`` lists the
options the default run lowers, and a sweep file is cut to one point (each axis's first value);
the README's Python block runs without its ``SLOW_CALLS`` lines.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: options of long examples and what the default run gives them instead
SMALLER = {"--budget": "1",      # hwsim search: simulate the best analytic layout only
           "--max-nodes": "1",   # hwsim capacity train: one server per candidate
           # hwsim capacity train: the first listed count only (a 10 MW site's fleets: 40 s a count)
           "--counts": lambda counts: counts.split(",")[0]}
#: calls of the README's Python block that the default run leaves out (-m benchmark runs them)
SLOW_CALLS = ("cheapest_training",)
PLACEHOLDER = re.compile(r"(?<![\w-])[A-Z][A-Z_]*[A-Z](?![\w-])")
COMMAND = re.compile(r"(?:^|&&\s*)(?:\.venv/bin/)?hwsim\s+(.*)$")
TIMEOUT_S = 300


@dataclass(frozen=True)
class Example:
    doc: str        # README.md, docs/sweeps.md, ...
    line: int
    text: str       # as written, continuation lines joined
    args: tuple[str, ...]  # after ``hwsim``, comments and [...] removed
    status: int

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def out(self) -> str | None:
        for opt in ("--out", "-o"):
            if opt in self.args[:-1]:
                return self.args[self.args.index(opt) + 1]
        return None


def _code_lines(text: str):
    """(line number, line) of every fenced or indented code line of a Markdown text."""
    fence = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
        elif fence or line.startswith("    ") or line.startswith("\t"):
            yield n, line


def examples() -> list[Example]:
    """The example commands of README.md and docs/*.md, in document order."""
    found = []
    for doc in DOCS:
        lines, joined = list(_code_lines(doc.read_text())), []
        for n, line in lines:  # join "\" continuations (they stay in the same block)
            if joined and joined[-1][1].rstrip().endswith("\\") and n == joined[-1][2] + 1:
                start, prev, _ = joined[-1]
                joined[-1] = (start, prev.rstrip()[:-1] + " " + line.strip(), n)
            else:
                joined.append((n, line, n))
        for n, line, _ in joined:
            text = line.strip().removeprefix("$ ")
            m = COMMAND.search(text)
            if m is None:
                continue
            command, _, comment = m.group(1).partition(" #")
            args = shlex.split(re.sub(r"(^|\s)\[[^\]]*\]", " ", command))  # no [optional ...]
            status = re.search(r"\bexit (?:status )?(\d+)", comment)
            found.append(Example(str(doc.relative_to(ROOT)), n, text, tuple(args),
                                 int(status.group(1)) if status else 0))
    return found


def _placeholder(ex: Example) -> str | None:
    return next((m.group(0) for a in ex.args for m in [PLACEHOLDER.search(a)] if m), None)


def _subcommands() -> list[tuple[str, ...]]:
    """Every command path of the typer app: (), ("run",), ("capacity",), ("capacity", "train")..."""
    import typer.main

    from hwsim.cli import app

    def walk(cmd, path):
        yield path
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                yield from walk(sub, (*path, name))
    return list(walk(typer.main.get_command(app), ()))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HWSIM_SCHEDULER"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["MPLBACKEND"] = "Agg"
    return env


def _hwsim(args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwsim.cli", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def _clean(p: subprocess.CompletedProcess, what: str, status: int = 0) -> None:
    both = p.stdout + p.stderr
    assert "Traceback" not in both, (what, both[-3000:])
    assert p.returncode == status, (what, p.returncode, both[-3000:])


class Workspace:
    """A temporary copy of the top-level paths the examples name; runs examples in it, each
    once, producers of a folder an example reads before it."""

    def __init__(self, folder: Path, full: bool, all_examples: list[Example]) -> None:
        self.folder, self.full, self.all = folder, full, all_examples
        self.done: dict[str, subprocess.CompletedProcess] = {}
        tops = {"scenarios"} | {Path(a).parts[0] for ex in all_examples for a in ex.args
                                if not a.startswith("-") and (ROOT / Path(a).parts[0]).exists()}
        for top in sorted(tops):
            src = ROOT / top
            if src.is_dir():
                shutil.copytree(src, folder / top)
            elif src.is_file():
                shutil.copy(src, folder / top)

    def args(self, ex: Example) -> list[str]:
        out, args = [], list(ex.args)
        for i, a in enumerate(args):
            if not self.full and i and args[i - 1] in SMALLER:
                rule = SMALLER[args[i - 1]]
                a = rule(a) if callable(rule) else rule
            expanded = sorted(glob.glob(a, root_dir=self.folder)) if glob.has_magic(a) else []
            out += expanded or [a]
        if not self.full and out[:1] == ["sweep"]:
            self._one_point(out[1])
        return out

    def _one_point(self, sweep_file: str) -> None:
        path = self.folder / sweep_file
        spec = yaml.safe_load(path.read_text())
        for axis in spec.get("axes") or []:
            if isinstance(axis.get("values"), list):
                axis["values"] = axis["values"][:1]
            if isinstance(axis.get("range"), dict):
                axis["range"]["stop"] = axis["range"].get("start")
            if "num" in axis:
                axis["num"] = 1
        path.write_text(yaml.safe_dump(spec, sort_keys=False))

    def run(self, ex: Example) -> subprocess.CompletedProcess:
        if ex.id in self.done:
            return self.done[ex.id]
        reads = set(ex.args) - {ex.out()}
        for prev in self.all[:self.all.index(ex)]:  # whatever ex reads that an earlier one writes
            if prev.out() in reads and not (self.folder / prev.out()).exists():
                _clean(self.run(prev), prev.text, prev.status)
        self.done[ex.id] = p = _hwsim(self.args(ex), self.folder)
        return p


EXAMPLES = examples()
RUNNABLE = [ex for ex in EXAMPLES if _placeholder(ex) is None]


def _long(ex: Example) -> bool:
    return ex.args[:1] == ("sweep",) or any(a in SMALLER for a in ex.args)


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    made: dict[bool, Workspace] = {}

    def get(full: bool) -> Workspace:
        if full not in made:
            made[full] = Workspace(tmp_path_factory.mktemp("full" if full else "small"), full,
                                   RUNNABLE)
        return made[full]
    return get


def test_the_documents_have_examples_and_the_rules_find_them():
    """The extraction itself: README's quickstart and usage lines are found, continuation
    lines joined, [optional] groups dropped, placeholders recognized."""
    ids = [ex.id for ex in EXAMPLES]
    assert len(ids) == len(set(ids)) and len(RUNNABLE) >= 10
    assert any(ex.args[:2] == ("run", "scenarios/quickstart.yaml") and ex.doc == "README.md"
               for ex in EXAMPLES)
    assert {ex.args[0] for ex in RUNNABLE} >= {"validate", "run", "catalog", "report", "search",
                                               "sweep", "capacity"}
    skipped = [ex for ex in EXAMPLES if _placeholder(ex)]
    assert skipped and all(_placeholder(ex) in ("FILE", "DIR", "HOST", "RUN_DIR", "RUNS")
                       for ex in skipped), \
        [(ex.id, _placeholder(ex)) for ex in skipped]
    assert all(not any(a.startswith("[") or a.endswith("]") for a in ex.args) for ex in EXAMPLES)
    assert _placeholder(Example("x", 1, "", ("capacity", "train", "--devices", "EPYC-7742"), 0)) is None


@pytest.mark.parametrize("path", _subcommands(), ids=lambda p: " ".join(p) or "hwsim")
def test_every_subcommand_has_help(path, tmp_path):
    p = _hwsim([*path, "--help"], tmp_path)
    _clean(p, f"hwsim {' '.join(path)} --help")
    assert "Usage:" in p.stdout, p.stdout


def _params():
    for ex in RUNNABLE:
        yield pytest.param(ex, False, id=ex.id)
        if _long(ex):
            yield pytest.param(ex, True, id=f"{ex.id}-full", marks=pytest.mark.benchmark)


@pytest.mark.parametrize("ex, full", list(_params()))
def test_documented_example_runs(ex, full, workspaces):
    p = workspaces(full).run(ex)
    _clean(p, ex.text, ex.status)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.benchmark)],
                         ids=["small", "full"])
def test_readme_python_snippet_runs(full, tmp_path):
    """The README's "From Python or a notebook" block in a copy of scenarios/; by default
    without its lines that call ``SLOW_CALLS`` (a capacity search), as written with
    ``-m benchmark``."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no Python block"
    code = "\n".join(line for line in blocks[0].splitlines()
                     if full or not any(f"{call}(" in line for call in SLOW_CALLS))
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert (tmp_path / "runs" / "nvlink" / "summary.json").exists()


def test_readme_lists_every_document_once():
    """docs/planning.md was listed twice in README's Documentation list (issue 12 item 8)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `(docs/[\w-]+\.md)`", section, flags=re.M)
    assert sorted(listed) == sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")), listed


def test_no_paths_of_one_machine_in_what_users_read():
    """benchmarks/README.md told readers to run /work/venv/bin/python (issue 12 item 8): the
    documents, notebooks, scenarios and catalog name no absolute path of the machine they were
    written on."""
    files = [*DOCS, ROOT / "benchmarks" / "README.md", *ROOT.glob("notebooks/*.ipynb"),
             *ROOT.glob("scenarios/**/*.yaml"), *ROOT.glob("hwsim/catalog/data/*.yaml")]
    machine = re.compile(r"(?<![\w.~])/(?:work|root|home|Users)/|(?<![\w.])/tmp/peers")
    hits = [f"{f.relative_to(ROOT)}:{n}: {line.strip()}" for f in files
            for n, line in enumerate(f.read_text().splitlines(), 1) if machine.search(line)]
    assert not hits, hits
