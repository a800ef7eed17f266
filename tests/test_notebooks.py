"""The notebooks in notebooks/ run top to bottom (nbclient) and use only hwsim's public API.

The kernel is started from the interpreter that runs the tests (``sys.executable -m
ipykernel_launcher``, through a kernel spec written for the test), so a fresh virtual
environment needs no installed kernel spec and no other interpreter's spec is picked up. The
notebooks are stored without outputs; executing one fails the test on the first cell that raises.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {"quickstart.ipynb", "trace_analysis.ipynb", "what_if_capacity.ipynb",
            "serving_slos.ipynb"}

# The public modules a notebook may import from, and what each exports (None: its __all__).
PUBLIC_MODULES = {"hwsim", "hwsim.analysis", "hwsim.analysis.plots", "hwsim.analysis.report"}
PUBLIC_NAMES = {"hwsim.analysis.plots": {"utilization_heatmap", "step_gantt", "step_window",
                                          "bottleneck_bars", "memory_breakdown", "memory_parts",
                                          "latency_cdf", "serving_timeline", "pareto_front",
                                          "pareto_mask"},
                "hwsim.analysis.report": {"render_report", "write_report"}}


def _public_names(module: str) -> set[str]:
    if module in PUBLIC_NAMES:
        return PUBLIC_NAMES[module]
    import importlib

    return set(importlib.import_module(module).__all__)


def _code(nb_path: Path) -> str:
    """The notebook's code cells as one Python source, IPython magics and shell lines dropped."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def private_uses(source: str) -> list[str]:
    """What *source* uses of hwsim beyond its public API: imports of other modules
    (``hwsim.jobs``, ``hwsim.engine``...), names a public module does not export, and any
    ``_private`` attribute of a public module or of an object imported from one."""
    tree = ast.parse(source)
    bad: list[str] = []
    aliases: dict[str, str] = {}   # local name -> public module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "hwsim" or a.name.startswith("hwsim."):
                    if a.name not in PUBLIC_MODULES:
                        bad.append(f"import {a.name}")
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else "hwsim"
        elif isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "hwsim" or node.module.startswith("hwsim.")):
            if node.module not in PUBLIC_MODULES:
                bad.append(f"from {node.module} import ...")
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in PUBLIC_MODULES:
                    aliases[a.asname or a.name] = sub
                elif a.name not in _public_names(node.module):
                    bad.append(f"from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            cur: ast.AST = node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if not (isinstance(cur, ast.Name) and cur.id in aliases):
                continue
            module = aliases[cur.id]
            for attr in reversed(chain):   # walk hwsim.analysis.plots.x from the left
                sub = f"{module}.{attr}"
                if sub in PUBLIC_MODULES:
                    module = sub
                    continue
                if attr.startswith("_") and not attr.startswith("__"):
                    bad.append(f"{module}.{attr}")
                elif attr not in _public_names(module) and attr != "__version__":
                    bad.append(f"{module}.{attr}")
                break
    return sorted(set(bad))


def test_every_notebook_is_here_and_stored_without_outputs():
    import nbformat

    assert {p.name for p in NOTEBOOKS} == EXPECTED
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{path.name}: store notebooks without outputs (clear them before committing)")
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= 4, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_only_the_public_api(path):
    assert private_uses(_code(path)) == []


def test_public_api_check_catches_private_use():
    assert private_uses("import hwsim.engine") == ["import hwsim.engine"]
    assert private_uses("from hwsim.jobs.training import x") == ["from hwsim.jobs.training import ..."]
    assert private_uses("import hwsim\nhwsim._private()") == ["hwsim._private"]
    assert private_uses("import hwsim\nhwsim.simulation.run()") == ["hwsim.simulation"]
    assert private_uses("from hwsim.analysis import plots\nplots._figure()") == [
        "hwsim.analysis.plots._figure"]
    assert private_uses("from hwsim.analysis.plots import _empty") == [
        "from hwsim.analysis.plots import _empty"]
    assert private_uses("import hwsim\nfrom hwsim.analysis import plots\n"
                        "hwsim.run('x'); plots.step_gantt(e); hwsim.analysis.plots.latency_cdf(r)"
                        ) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    # nbclient, nbformat, ipykernel and matplotlib are in the test extra: missing, this fails.
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # A kernel spec of our own, so that no installed "python3" spec (another interpreter) is used.
    spec_dir = tmp_path / "kernels" / "hwsim-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hwsim test", "language": "python"}))
    km = KernelManager(kernel_name="hwsim-test",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
    nb = nbformat.read(path, as_version=4)
    # The kernel imports this checkout's hwsim, whatever is installed, and draws on Agg.
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    client = nbclient.NotebookClient(nb, km=km, timeout=120, allow_errors=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    # Every plot the notebook draws is an image in its outputs.
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    draws = len(re.findall(r"plots\.\w+\(|\.plot\(", "\n".join(c.source for c in code)))
    draws -= len(re.findall(r"plots\.pareto_mask\(", "\n".join(c.source for c in code)))
    assert images >= draws > 0 or (draws == 0 and images == 0), (path.name, images, draws)
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
