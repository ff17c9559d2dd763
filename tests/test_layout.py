"""The layers of docs/design.md, held by the code: what each subpackage may import.

Every import statement of every module counts, those inside functions too, and so do
the rnnlab modules it imports in turn: a rule on ``rnnlab.training`` is broken as much by
``rnnlab.training`` importing OmegaConf as by it importing a module that does.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = sorted(
    ".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
    for p in (SRC / "rnnlab").rglob("*.py")
)
#: the hand-written cells: each file with the layer stack they share works anywhere with torch
CELLS = (
    "rnnlab.nn.rnn",
    "rnnlab.nn.gru",
    "rnnlab.nn.lstm",
    "rnnlab.nn.mingru",
    "rnnlab.nn.minlstm",
)
#: what a cell's file may import of rnnlab: the layer stack, and for a cell linear in its
#: state the layer of such cells, which runs the scan
PLUMBING = {
    "rnnlab.nn.stack": set(),
    "rnnlab.nn.linear": {"rnnlab.nn.stack", "rnnlab.nn.scan"},
    "rnnlab.nn.scan": set(),
}
#: the dependency-free modules every layer may use
BASE = ("rnnlab", "rnnlab.errors", "rnnlab.atomic")


def path_of(module: str) -> Path:
    base = SRC.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@cache
def direct_imports(module: str) -> frozenset[str]:
    """Every module ``module``'s own code imports (rnnlab's by full name, others top-level)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path_of(module).read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if f"{node.module}.{a.name}" in MODULES
            )
    first_party = {n for n in names if n.split(".")[0] == "rnnlab"}
    parents = {".".join(n.split(".")[:i]) for n in first_party for i in range(1, n.count(".") + 1)}
    return frozenset({n.split(".")[0] for n in names - first_party} | first_party | parents)


@cache
def reachable(module: str) -> frozenset[str]:
    """Everything importing ``module`` runs: its own imports and those of rnnlab's it loads."""
    seen, todo = set(), [module, *parents_of(module)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo += [m for m in direct_imports(current) if m in MODULES]
    return frozenset(n for m in seen for n in direct_imports(m)) | frozenset(seen)


def parents_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def third_party(names: frozenset[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] != "rnnlab" and n not in sys.stdlib_module_names}


def layer_modules(layer: str) -> list[str]:
    return [m for m in MODULES if in_layer(m, layer)]


def test_the_layout_is_the_one_of_the_design_document():
    """Five layers, and beside them only the two modules every layer shares."""
    top = SRC / "rnnlab"
    subpackages = {p.name for p in top.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == {"nn", "data", "training", "report", "cli"}
    assert sorted(p.name for p in top.glob("*.py")) == ["__init__.py", "atomic.py", "errors.py"]


@pytest.mark.parametrize("cell", CELLS)
def test_a_cell_imports_torch_and_the_plumbing_around_cells_only(cell: str):
    imports = direct_imports(cell)
    ours = {n for n in imports if n.startswith("rnnlab")} - {"rnnlab", "rnnlab.nn"}
    assert ours and ours <= set(PLUMBING), ours
    assert third_party(imports) == {"torch"}
    for module, allowed in PLUMBING.items():
        ours = {n for n in direct_imports(module) if n.startswith("rnnlab.nn.")}
        assert ours <= allowed, (module, ours)


def test_the_design_document_names_every_module():
    """docs/design.md is the map a contributor reads: each module of src/ appears in it."""
    design = (SRC.parent / "docs" / "design.md").read_text()
    names = {m.rsplit(".", 1)[-1] for m in MODULES if m != "rnnlab"}
    missing = sorted(n for n in names if not re.search(rf"\b{n}\b", design))
    assert not missing, f"docs/design.md does not name {missing}"


@pytest.mark.parametrize("module", layer_modules("rnnlab.nn"))
def test_nn_imports_nothing_of_rnnlab_but_errors(module: str):
    ours = {n for n in reachable(module) if n.startswith("rnnlab")}
    assert ours <= {*BASE, *layer_modules("rnnlab.nn")}, ours
    assert third_party(reachable(module)) <= {"torch"}


@pytest.mark.parametrize("module", layer_modules("rnnlab.data"))
def test_data_knows_no_model_and_no_hydra(module: str):
    names = reachable(module)
    assert not {n for n in names if in_layer(n, "rnnlab.nn") or in_layer(n, "rnnlab.training")}
    assert not {"hydra", "omegaconf"} & names
    if "lightning" in names:
        assert module == "rnnlab.data.datamodule", "Lightning only for the DataModule"


@pytest.mark.parametrize("module", layer_modules("rnnlab.training"))
def test_training_knows_lightning_not_hydra(module: str):
    names = reachable(module)
    assert not {"hydra", "omegaconf"} & names
    assert not {n for n in names if in_layer(n, "rnnlab.cli") or in_layer(n, "rnnlab.report")}


def test_no_arrow_runs_back_up_inside_training():
    """Callbacks serve the module and the checkpoints, so they may import what lies beside
    them (run_state, logging_steps) but nothing that imports a callback in turn."""
    callbacks = set(layer_modules("rnnlab.training.callbacks"))
    for callback in callbacks:
        above = {m for m in reachable(callback) if m in MODULES} - callbacks
        back = {m for m in above if in_layer(m, "rnnlab.training") and reachable(m) & callbacks}
        assert not back, f"{callback} imports {back}, which import callbacks"


@pytest.mark.parametrize("module", layer_modules("rnnlab.report"))
def test_report_reads_files_and_never_the_model(module: str):
    names = reachable(module)
    assert not {"torch", "lightning"} & names
    ours = {n for n in names if n.startswith("rnnlab.")}
    assert ours <= {*BASE, "rnnlab.nn", *layer_modules("rnnlab.report")}, ours


@pytest.mark.parametrize("module", [m for m in MODULES if not in_layer(m, "rnnlab.cli")])
def test_only_the_cli_and_the_sweep_callback_import_hydra(module: str):
    if module != "rnnlab.report.sweep":
        assert "hydra" not in direct_imports(module)


def test_importing_rnnlab_nn_loads_no_hydra_and_registers_no_resolver():
    """In a fresh interpreter, as a user importing the model would."""
    code = (
        "import sys, rnnlab, rnnlab.nn.lm, rnnlab.nn.sampling\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert not {"hydra", "omegaconf", "lightning"} & set(loaded.stdout.split())
