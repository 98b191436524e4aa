"""One exception tree rooted at RallypointError: the tree each package's errors.py draws in its
docstring is the tree its classes form, and every error a package declares hangs under that
package's sub-root."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest

from appliance import errors as appliance_errors
from sync import errors as sync_errors

# A line of a drawn tree: the branch characters, a class name, then its module in brackets when
# the class is declared outside errors.py (anything else on the line is a comment).
TREE_LINE = re.compile(r"^(?P<branch>[ │├└─]*)(?P<name>[A-Z][A-Za-z]*)(?:\s+\((?P<module>[a-z_.]+)\))?(?:\s.*)?$")


def drawn_tree(module: ModuleType) -> dict[str, tuple[str | None, str]]:
    """class name -> (parent name, declaring module), from the tree in `module`'s docstring."""
    assert module.__doc__ is not None
    lines = module.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("RallypointError"))
    tree: dict[str, tuple[str | None, str]] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) of the current path
    for line in lines[start:]:
        if not line.strip():
            break
        match = TREE_LINE.match(line)
        assert match is not None, f"not a tree line: {line!r}"
        column = len(match["branch"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        tree[match["name"]] = (stack[-1][1] if stack else None, match["module"] or module.__name__)
        stack.append((column, match["name"]))
    return tree


def declared_under(root: type[Exception], package: str) -> dict[str, tuple[str | None, str]]:
    """Every exception class the package declares below `root` (root included), as drawn."""
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
    found: dict[str, tuple[str | None, str]] = {}
    pending: list[type[Exception]] = [root]
    while pending:
        cls = pending.pop()
        if cls.__module__.split(".")[0] == package and not cls.__name__.startswith("_"):
            found[cls.__name__] = (cls.__base__.__name__ if cls.__base__ is not None else None, cls.__module__)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(
    ("errors", "root", "package"),
    [(appliance_errors, appliance_errors.ApplianceError, "appliance"), (sync_errors, sync_errors.SyncError, "sync")],
    ids=["appliance", "sync"],
)
def test_each_package_draws_its_own_tree(errors: ModuleType, root: type[Exception], package: str) -> None:
    drawn = drawn_tree(errors)
    subtree = {name: place for name, place in drawn.items() if name == root.__name__ or _descends(drawn, name, root.__name__)}
    assert subtree == declared_under(root, package)


def test_every_package_root_hangs_under_rallypoint_error() -> None:
    drawn = drawn_tree(appliance_errors)
    assert drawn["RallypointError"] == (None, "appliance.errors")
    for root in (appliance_errors.ApplianceError, sync_errors.SyncError):
        assert root.__base__ is appliance_errors.RallypointError
        assert drawn[root.__name__][0] == "RallypointError"
    assert drawn_tree(sync_errors)["SyncError"][0] == "RallypointError"


def test_no_package_error_skips_its_sub_root() -> None:
    """Below RallypointError only the package roots: an error declared straight under it would
    be caught by `except RallypointError` but by no package's own `except`."""
    for package in ("appliance", "sync"):
        declared_under(appliance_errors.RallypointError, package)  # imports the whole package
    direct = {cls.__name__ for cls in appliance_errors.RallypointError.__subclasses__() if cls.__module__.split(".")[0] in ("appliance", "sync")}
    assert direct == {"ApplianceError", "SyncError"}


def _descends(tree: dict[str, tuple[str | None, str]], name: str, ancestor: str) -> bool:
    parent = tree[name][0]
    while parent is not None:
        if parent == ancestor:
            return True
        parent = tree[parent][0]
    return False
