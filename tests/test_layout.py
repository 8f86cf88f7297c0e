"""The package layout: no import cycles (function-local imports count), and each package
depends only on the layers below it (docs/architecture.md)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autoheri_jax"

# package -> what it must never import (prefixes of dotted module names)
FORBIDDEN = {
    "autoheri_jax.config": ("autoheri_jax.model.network", "autoheri_jax.train"),
    # the method configs sit below config.py, which re-exports them
    "autoheri_jax.method_config": (
        "autoheri_jax.config",
        "autoheri_jax.model",
        "autoheri_jax.data",
        "autoheri_jax.train",
        "autoheri_jax.search",
        "autoheri_jax.experiment",
    ),
    "autoheri_jax.data": (
        "autoheri_jax.config",
        "autoheri_jax.model",
        "autoheri_jax.search",
        "autoheri_jax.train",
        "autoheri_jax.report",
        "autoheri_jax.experiment",
        "autoheri_jax.study",
        "autoheri_jax.cli",
    ),
    "autoheri_jax.model": (
        "autoheri_jax.config",
        "autoheri_jax.data",
        "autoheri_jax.train",
        "autoheri_jax.report",
        "autoheri_jax.experiment",
        "autoheri_jax.study",
        "autoheri_jax.cli",
        "autoheri_jax.search",
    ),
    "autoheri_jax.model.gates": ("autoheri_jax.model.network", "autoheri_jax.train"),
    "autoheri_jax.train": (
        "autoheri_jax.report",
        "autoheri_jax.experiment",
        "autoheri_jax.study",
        "autoheri_jax.cli",
        "autoheri_jax.search.evolution",
    ),
    "autoheri_jax.report": (
        "autoheri_jax.train",
        "autoheri_jax.experiment",
        "autoheri_jax.cli",
        "autoheri_jax.study",
    ),
    # the algorithms of the search; the workflows that run them over a workdir sit above
    "autoheri_jax.search": (
        "autoheri_jax.experiment",
        "autoheri_jax.evolution_run",
        "autoheri_jax.exporting",
        "autoheri_jax.study",
        "autoheri_jax.cli",
        "autoheri_jax.report",
        "autoheri_jax.serving",
        "autoheri_jax.seed_runs",
    ),
    # a workdir's files and lifecycle, below every workflow that writes them
    "autoheri_jax.artifacts": (
        "autoheri_jax.search",
        "autoheri_jax.experiment",
        "autoheri_jax.evolution_run",
        "autoheri_jax.exporting",
        "autoheri_jax.study",
        "autoheri_jax.cli",
        "autoheri_jax.seed_runs",
        "autoheri_jax.serving",
    ),
    # an export is written from a spec and params and read without the training code
    "autoheri_jax.serving": (
        "autoheri_jax.train",
        "autoheri_jax.search",
        "autoheri_jax.experiment",
        "autoheri_jax.evolution_run",
        "autoheri_jax.exporting",
        "autoheri_jax.study",
        "autoheri_jax.cli",
        "autoheri_jax.report",
        "autoheri_jax.seed_runs",
        "autoheri_jax.config",
    ),
}

# the workflows on top, in order: each may use the groups before it, never its peers or those
# after it (experiment is the one-shot run; evolution_run and seed_runs drive it; exporting
# writes from a finished workdir; study runs them all; errors is how the command reports every
# layer's failures; cli is the command over everything)
_WORKFLOW_ORDER = (
    ("experiment",),
    ("evolution_run", "seed_runs"),
    ("exporting",),
    ("study",),
    ("errors",),
    ("cli",),
)
_WORKFLOWS = tuple(m for group in _WORKFLOW_ORDER for m in group)
_PACKAGES = ("config", "data", "model", "train", "search", "serving", "artifacts", "report")
# the foundation: small modules every layer may use, which use no other module of the package
FOUNDATION = (
    "rng",
    "progress",
    "metrics",
    "hashing",
    "workdir_lock",
    "workdir_format",
    "safe_output",
    "phases",
    "settings",
)
for _name in FOUNDATION:
    FORBIDDEN[f"autoheri_jax.{_name}"] = tuple(
        f"autoheri_jax.{m}" for m in _PACKAGES + _WORKFLOWS + FOUNDATION if m != _name
    )
for _i, _group in enumerate(_WORKFLOW_ORDER):
    _later = [m for g in _WORKFLOW_ORDER[_i + 1 :] for m in g]
    for _name in _group:
        _banned = _later + [m for m in _group if m != _name]
        FORBIDDEN[f"autoheri_jax.{_name}"] = tuple(f"autoheri_jax.{m}" for m in _banned)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node, except those under `if TYPE_CHECKING:` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports_of(path: Path) -> set[str]:
    """Every autoheri_jax module `path` imports when run, at any depth of the file."""
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("autoheri_jax")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("autoheri_jax"):
            for a in node.names:  # `from pkg import module` imports the module
                sub = f"{node.module}.{a.name}"
                where = PACKAGE.parent / Path(*sub.split("."))
                is_module = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                out.add(sub if is_module else node.module)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in imports_of(p) if d in mods and d != m} for m, p in mods.items()}


def test_no_import_cycles(graph):
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_packages_import_only_layers_below(graph):
    bad = [
        f"{m} imports {d}"
        for m, deps in graph.items()
        for pkg, banned in FORBIDDEN.items()
        if m == pkg or m.startswith(pkg + ".")
        for d in deps
        if any(d == b or d.startswith(b + ".") for b in banned)
    ]
    assert bad == [], "upward imports: " + "; ".join(sorted(bad))


def package_of(module: str) -> str:
    """autoheri_jax.model.build -> autoheri_jax.model; a top-level module is its own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_package_imports_one_that_imports_it_back(graph):
    """Cycles between packages (config, data, model, ...), not only between modules: a module
    of one importing a module of another that (through any of its modules) imports it back."""
    packages: dict[str, set[str]] = {}
    for m, deps in graph.items():
        packages.setdefault(package_of(m), set()).update(
            package_of(d) for d in deps if package_of(d) != package_of(m)
        )
    packages = {p: {d for d in deps if d in packages} for p, deps in packages.items()}
    test_no_import_cycles(packages)


def test_a_cycle_would_be_found(graph):
    looped = {k: set(v) for k, v in graph.items()}
    looped["autoheri_jax.model.spec"].add("autoheri_jax.model.network")
    with pytest.raises(AssertionError, match="model.network"):
        test_no_import_cycles(looped)


def test_a_package_cycle_would_be_found(graph):
    looped = {k: set(v) for k, v in graph.items()}  # model.build importing config at run time
    looped["autoheri_jax.model.build"].add("autoheri_jax.config")
    with pytest.raises(AssertionError, match=r"autoheri_jax\.config.*autoheri_jax\.model"):
        test_no_package_imports_one_that_imports_it_back(looped)


def test_building_a_config_imports_no_jax():
    code = (
        "import sys; from autoheri_jax.config import load_config;"
        "load_config('experiments/configs/default.py');"
        "print(sorted(m for m in ('jax', 'optax', 'orbax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_every_module_falls_under_a_layer_rule(graph):
    """A new package or top-level module needs its row in FORBIDDEN (and docs/architecture.md's
    Dependencies), so the layering is checked for all of the package, not the part listed."""
    ruled = [m for m in graph if any(m == p or m.startswith(p + ".") for p in FORBIDDEN)]
    unruled = sorted(set(graph) - set(ruled) - {"autoheri_jax", "autoheri_jax.__main__"})
    assert unruled == [], f"modules without a layer rule: {unruled}"


def test_an_upward_import_or_an_unruled_module_would_be_found(graph):
    upward = {k: set(v) for k, v in graph.items()}
    upward["autoheri_jax.experiment"].add("autoheri_jax.study")
    upward["autoheri_jax.metrics"].add("autoheri_jax.model.spec")
    with pytest.raises(AssertionError, match="experiment imports autoheri_jax.study"):
        test_packages_import_only_layers_below(upward)
    with pytest.raises(AssertionError, match="metrics imports autoheri_jax.model.spec"):
        test_packages_import_only_layers_below(upward)
    with pytest.raises(AssertionError, match="newpkg"):
        test_every_module_falls_under_a_layer_rule({**graph, "autoheri_jax.newpkg.x": set()})
