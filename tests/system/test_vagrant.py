"""The Vagrant lab's definition: `vagrant validate` against the libvirt provider (no box is
downloaded, no VM started) and the provisioning script's syntax."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATE_TIMEOUT_S = 120


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="needs vagrant and vagrant-libvirt (apt-get install vagrant vagrant-libvirt)")
def test_vagrantfile_validates(tmp_path: Path) -> None:
    env = os.environ | {"VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_DEFAULT_PROVIDER": "libvirt", "VAGRANT_HOME": str(tmp_path)}
    env.pop("VAGRANT_CWD", None)
    result = subprocess.run(["vagrant", "validate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=VALIDATE_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_vagrant_provisioning_is_valid_bash() -> None:
    script = ROOT / "images" / "vagrant" / "provision"
    assert os.access(script, os.X_OK)
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr

