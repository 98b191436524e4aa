"""The shape of the code, checked rather than promised (issue 14 point 7): module and class
sizes, the Node facade's few public members, pure modules, where the store's libraries may be
imported, what sync may import of appliance, layers one way, every test in a tier, and every
port (sync/ports.py, the store, the change feed) with a contract suite over two or more
implementations. Read from the source with ast; only the layer check imports the packages, in a
fresh interpreter."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TIERS

PACKAGES = ("appliance", "sync", "tui")
MAX_MODULE_LINES = 600
MAX_CLASS_METHODS = 40
MAX_FACADE_MEMBERS = 22  # openers (init, open, join, restore, exists), close, home, the store, the feed, one attribute per service
# Pure modules: bytes in and out, randomness and time as parameters. Add a module here when it
# is pure (e.g. the graph helpers of the change log); everything it imports of the project is
# then held to the same rule.
PURE = [
    "appliance/ids.py",
    "appliance/cbor.py",
    "appliance/crypto.py",
    "appliance/certs.py",
    "appliance/changes.py",
    "appliance/documents.py",
    "appliance/segments.py",
    "appliance/audit.py",
    "appliance/netpolicy.py",
    "appliance/audit_actions.py",
    "appliance/graph.py",
    "appliance/direct.py",
    "appliance/head_rules.py",
    "appliance/policy.py",
    "appliance/incoming.py",
    "appliance/wholes.py",
    "appliance/view_rows.py",
    "appliance/terms.py",
    "appliance/directory_records.py",
    "appliance/audit_feed.py",
    "appliance/totp.py",
    "appliance/recovery_kit.py",
    "appliance/coded.py",
    "appliance/user_keys.py",
    "appliance/retention.py",
    "appliance/compliance_records.py",
    "appliance/export_csv.py",
    "appliance/export_actiance.py",
    "appliance/export_globalrelay.py",
    "appliance/export_signed.py",
    "appliance/export_verify.py",
    "appliance/export_encoders.py",
    "appliance/export_history.py",
    "appliance/export_segment.py",
    "appliance/export_zip.py",
    "appliance/atrest.py",
]
IMPURE = {"asyncio", "sqlalchemy", "aiosqlite", "socket", "zeroconf", "textual"}
STORE_LIBRARIES = {"sqlalchemy", "aiosqlite", "alembic"}  # only appliance/ talks to the database
# Ports outside sync/ports.py (every Protocol there is a port too): file -> class.
OTHER_PORTS = {"appliance/store.py": "Storage", "appliance/feed.py": "Feed"}
CONTRACTS = REPO / "tests" / "contracts"


def modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (REPO / package).rglob("*.py"))


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def name_of(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def imported_modules(path: Path) -> Iterator[str]:
    """Every module `path` imports, anywhere in it (functions too), as dotted names; for `from
    X import Y`, both X and X.Y (Y may be a module)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(parsed(path)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def project_file(module: str) -> Path | None:
    """The source file of a project module, None for anything else."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_no_module_is_over_600_lines() -> None:
    long = {name_of(p): n for p in modules(*PACKAGES) if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_class_has_over_40_methods() -> None:
    large = {
        f"{name_of(path)}::{node.name}": methods
        for path in modules(*PACKAGES)
        for node in ast.walk(parsed(path))
        if isinstance(node, ast.ClassDef)
        and (methods := sum(isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) for item in node.body)) > MAX_CLASS_METHODS
    }
    assert large == {}


def public_members(cls: ast.ClassDef) -> set[str]:
    """Methods, class attributes and attributes assigned to `self` anywhere in the class, without
    a leading underscore."""
    names: set[str] = set()
    for item in cls.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            names.update(target.id for target in item.targets if isinstance(target, ast.Name))
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.attr for t in targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self")
    return {name for name in names if not name.startswith("_")}


def test_the_node_facade_has_few_public_members() -> None:
    node = next(c for c in parsed(REPO / "appliance" / "node.py").body if isinstance(c, ast.ClassDef) and c.name == "Node")
    members = public_members(node)
    assert len(members) <= MAX_FACADE_MEMBERS, sorted(members)
    assert not any(isinstance(f, ast.FunctionDef) and f.name == "__getattr__" for f in node.body), "no forwarding: services are attributes"


def test_pure_modules_import_no_io_and_only_pure_project_modules() -> None:
    """The rule holds for each pure module and for every project module it imports, however
    indirectly (appliance/errors.py, say): a pure module cannot reach the store through another."""
    impure: dict[str, set[str]] = {}
    seen: set[Path] = set()
    todo = [REPO / name for name in PURE]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        imports = set(imported_modules(path))
        if found := {m.split(".")[0] for m in imports} & IMPURE:
            impure[name_of(path)] = found
        todo.extend(file for m in imports if (file := project_file(m)) is not None)
    assert impure == {}


def test_only_appliance_imports_the_store_libraries() -> None:
    found = {name_of(p): libraries for p in modules("sync", "tui") if (libraries := {m.split(".")[0] for m in imported_modules(p)} & STORE_LIBRARIES)}
    assert found == {}


def test_sync_imports_neither_the_node_nor_private_appliance_modules() -> None:
    """sync sees the node only through its ports; `appliance.node` and names with a leading
    underscore (modules or members) are the node's inside."""
    found: dict[str, set[str]] = {}
    for path in modules("sync"):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "appliance" and (module == "appliance.node" or any(part.startswith("_") for part in parts[1:])):
                found.setdefault(name_of(path), set()).add(module)
    assert found == {}


PROBE = """
import importlib, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for module in pkgutil.walk_packages(package.__path__, sys.argv[1] + "."):
    if ".migrations" not in module.name:
        importlib.import_module(module.name)
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""

FORBIDDEN = {
    "appliance": {"sync", "tui", "textual", "zeroconf"},
    "sync": {"tui", "textual"},
}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    result = subprocess.run([sys.executable, "-c", PROBE, layer], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert layer in loaded
    assert loaded & FORBIDDEN[layer] == set()


def test_every_test_module_is_in_a_tier() -> None:
    outside = sorted(name_of(p) for p in (REPO / "tests").rglob("test_*.py") if p.relative_to(REPO / "tests").parts[0] not in TIERS)
    assert outside == []


def is_protocol(cls: ast.ClassDef) -> bool:
    return any((isinstance(b, ast.Name) and b.id == "Protocol") or (isinstance(b, ast.Attribute) and b.attr == "Protocol") for b in cls.bases)


def ports() -> list[str]:
    """Every port as `file::Class`: the Protocols of sync/ports.py, the store's, the feed's."""
    found = [f"{name}::{cls}" for name, cls in OTHER_PORTS.items()]
    ports_file = REPO / "sync" / "ports.py"
    if ports_file.is_file():
        found += [f"sync/ports.py::{c.name}" for c in parsed(ports_file).body if isinstance(c, ast.ClassDef) and is_protocol(c)]
    return found


def module_assignment(tree: ast.Module, name: str) -> ast.expr | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node.value
    return None


def shipped_imports(tree: ast.Module) -> dict[str, str]:
    """Names the suite imports from the project's packages, with their module."""
    return {
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES
        for alias in node.names
    }


def suite_for(port: str) -> Path | None:
    """The contract suite whose module-level PORT names the port's class (tests/contracts/__init__.py)."""
    for path in sorted(CONTRACTS.glob("test_*.py")):
        value = module_assignment(parsed(path), "PORT")
        if (isinstance(value, ast.Name) and value.id == port) or (isinstance(value, ast.Attribute) and value.attr == port):
            return path
    return None


def test_sync_declares_its_ports() -> None:
    assert (REPO / "sync" / "ports.py").is_file() and any(p.startswith("sync/ports.py::") for p in ports())


@pytest.mark.parametrize("port", ports())
def test_every_port_has_a_contract_suite_over_two_shipped_implementations(port: str) -> None:
    file, cls = port.split("::")
    declared = [c for c in parsed(REPO / file).body if isinstance(c, ast.ClassDef) and c.name == cls] if (REPO / file).is_file() else []
    assert declared and is_protocol(declared[0]), f"{file} declares no Protocol {cls}"
    suite = suite_for(cls)
    assert suite is not None, f"no tests/contracts/test_*.py has PORT = {cls}"
    tree = parsed(suite)
    implementations = module_assignment(tree, "IMPLEMENTATIONS")
    if isinstance(implementations, ast.Dict):  # test ids -> classes
        implementations = ast.List([v for v in implementations.values])
    assert isinstance(implementations, ast.List | ast.Tuple), f"{name_of(suite)}: no module-level IMPLEMENTATIONS list or dict"
    names = [ast.unparse(e) for e in implementations.elts]
    assert len(set(names)) >= 2, f"{name_of(suite)} runs {names}: a real implementation and a twin at least"
    imported = shipped_imports(tree)
    assert all(n.split(".")[0] in imported for n in names), f"{name_of(suite)}: every implementation is shipped with the code, not defined in tests: {names}"
    parametrised = [
        call
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and re.search(r"(^|\.)(fixture|parametrize)$", ast.unparse(call.func))
        and any(isinstance(n, ast.Name) and n.id == "IMPLEMENTATIONS" for a in [*call.args, *(k.value for k in call.keywords)] for n in ast.walk(a))
    ]
    assert parametrised, f"{name_of(suite)}: no fixture or parametrize runs over IMPLEMENTATIONS"
