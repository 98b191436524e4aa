"""Imports flow one way: tui -> sync -> appliance. Checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

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
