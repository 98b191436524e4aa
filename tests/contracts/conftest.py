"""Contract cases that need a multicast loopback (the mDNS peer finder) run where they can: in
this process when the host's loopback carries multicast, else - as root - the same test in a
child pytest inside a fresh network namespace whose loopback does (tests/netns.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import ROOT_REASON, netns

INSIDE_NAMESPACE = "RALLYPOINT_CONTRACT_IN_NETNS"
CHILD_TIMEOUT_S = 120.0
REPO = Path(__file__).resolve().parents[2]


def loopback_multicast() -> bool:
    try:
        return int(Path("/sys/class/net/lo/flags").read_text(), 16) & 0x1000 != 0  # IFF_MULTICAST
    except (OSError, ValueError):
        return False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "multicast_loopback: the case needs mDNS on 127.0.0.1 (run in a namespace when the host's loopback has no multicast)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("multicast_loopback") and not loopback_multicast() and ROOT_REASON is not None:
        pytest.skip(f"the host's loopback carries no multicast, and a namespace {ROOT_REASON}")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not pyfuncitem.get_closest_marker("multicast_loopback") or loopback_multicast() or os.environ.get(INSIDE_NAMESPACE):
        return None
    with netns() as ns:
        child = subprocess.run(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", pyfuncitem.nodeid],
            cwd=REPO,
            env={**os.environ, INSIDE_NAMESPACE: "1"},
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
    assert child.returncode == 0 and " passed" in child.stdout, f"{pyfuncitem.nodeid} in a namespace:\n{child.stdout}\n{child.stderr}"
    return True
