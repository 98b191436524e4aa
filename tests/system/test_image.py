"""The appliance image recipe (images/): its units, firewall, USB mounting and signed updates.

The cheap tests read the overlay files and run the update verifier and installer on this host
(against a throwaway venv). The long test runs `images/build --stage rootfs` for real (root and
debootstrap needed: several minutes, Debian mirror and PyPI), then checks the tree in a chroot:
`rallypoint --version`, `systemd-analyze verify`, `nft --check`, the user, no password login, and
a signed update that is applied while tampered and foreign-key ones are refused.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.netpolicy import DEFAULT_ALLOWED
from appliance.retention import STALE_AFTER_MS
from sync.lan import DEFAULT_PORT
from sync.sneakernet import import_bundles
from tests.conftest import PASSPHRASE, make_workspace, revocation_on_stick, run_cli
from tests.netns import BridgeLan, requires_root
from tui.cli import EXIT_WIPED

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
OVERLAY = IMAGES / "overlay"
SERVICE = OVERLAY / "etc/systemd/system/rallypoint.service"
CONSOLE = OVERLAY / "etc/systemd/system/rallypoint-console.service"
USB_UNIT = OVERLAY / "etc/systemd/system/rallypoint-usb-mount@.service"
FIREWALL_UNIT = OVERLAY / "etc/systemd/system/rallypoint-firewall-networks.service"
BACKUP_UNIT = OVERLAY / "etc/systemd/system/rallypoint-backup.service"
BACKUP_TIMER = OVERLAY / "etc/systemd/system/rallypoint-backup.timer"
EXPORT_UNIT = OVERLAY / "etc/systemd/system/rallypoint-compliance-export.service"
EXPORT_TIMER = OVERLAY / "etc/systemd/system/rallypoint-compliance-export.timer"
USB_RULE = OVERLAY / "etc/udev/rules.d/90-rallypoint-usb.rules"
NFTABLES = OVERLAY / "etc/nftables.conf"
SBIN = OVERLAY / "usr/local/sbin"
BUILD_TIMEOUT_S = 1800
COMMAND_TIMEOUT_S = 120
VENV_TIMEOUT_S = 180


def load_script(name: str) -> types.ModuleType:
    """One of the image's Python scripts (no .py suffix) as a module, without writing bytecode
    next to it."""
    path = SBIN / name
    module = types.ModuleType(name.replace("-", "_"))
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


update = load_script("rallypoint-update")


def directives(unit: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, values in order (keys such as SystemCallFilter repeat)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


# --- units, firewall, USB: the files themselves --------------------------------------------


def test_service_runs_serve_sandboxed_with_the_sealed_passphrase() -> None:
    unit = directives(SERVICE)
    required = {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "StateDirectory": "rallypoint",
        "Restart": "on-failure", "ProtectHome": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK", "User": "rallypoint", "MemoryDenyWriteExecute": "yes",
    }
    for key, value in required.items():
        assert unit.get(key) == [value], f"{key}={value} missing from rallypoint.service"
    assert "@system-service" in unit["SystemCallFilter"]
    (exec_start,) = unit["ExecStart"]
    assert exec_start == "/usr/local/bin/rallypoint serve --passphrase-file %d/passphrase"
    # The unit decrypts exactly the credential the console seals at first boot, into the home it opens.
    tty = load_script("rallypoint-tty")
    assert unit["LoadCredentialEncrypted"] == [f"passphrase:{tty.CREDENTIAL}"]
    assert unit["ConditionPathExists"] == [str(tty.CREDENTIAL)]
    assert f"RALLYPOINT_HOME={tty.NODE_HOME}" in unit["Environment"][0].split()
    assert unit["WantedBy"] == ["multi-user.target"]
    assert unit["RestartPreventExitStatus"] == [str(EXIT_WIPED)]  # a wiped node is not restarted


def test_the_daily_backup_runs_from_a_timer_with_the_services_credential() -> None:
    """The timer starts `backup --scheduled` daily, making up a missed day at boot, within the
    slack the console's health view allows; the service unlocks the node exactly as
    rallypoint.service does, beside it, in a sandbox without network; the build enables it."""
    service, unit, timer = directives(SERVICE), directives(BACKUP_UNIT), directives(BACKUP_TIMER)
    assert unit["ExecStart"] == ["/usr/local/bin/rallypoint backup --scheduled --passphrase-file %d/passphrase"]
    for key in ("LoadCredentialEncrypted", "ConditionPathExists", "Environment", "User", "Group", "StateDirectory", "UMask"):
        assert unit[key] == service[key], key
    assert unit["Type"] == ["oneshot"] and "Conflicts" not in unit  # never stops the running node
    for key, value in {"PrivateNetwork": "yes", "NoNewPrivileges": "yes", "ProtectHome": "yes", "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX"}.items():
        assert unit[key] == [value], key
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"] and timer["WantedBy"] == ["timers.target"]
    (delay,) = timer["RandomizedDelaySec"]
    assert delay.endswith("min") and 24 * 60 + int(delay[:-3]) < STALE_AFTER_MS // 60_000  # a run late by the delay is not yet "overdue"
    build = (IMAGES / "build").read_text()
    enabled = re.search(r"^ENABLED_UNITS = (\[.*\])$", build, re.M)
    sandboxed = re.search(r"^SANDBOXED_UNITS = (\[.*?\])", build, re.M)
    assert enabled and "rallypoint-backup.timer" in json.loads(enabled[1])
    assert sandboxed and "rallypoint-backup.service" in json.loads(sandboxed[1])
    if shutil.which("systemd-analyze"):  # the sandbox's score on this host, as the build checks it in the image
        scored = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(BACKUP_UNIT)], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        assert scored.returncode == 0, scored.stdout + scored.stderr


def test_console_replaces_the_getty_on_tty1() -> None:
    unit = directives(CONSOLE)
    assert unit["TTYPath"] == ["/dev/tty1"]
    assert unit["Conflicts"] == ["getty@tty1.service"]
    assert unit["ExecStart"] == ["/usr/local/sbin/rallypoint-tty"]
    assert unit["Restart"] == ["always"]
    assert os.access(SBIN / "rallypoint-tty", os.X_OK)


def test_the_scheduled_compliance_export_runs_hourly_sandboxed_with_the_services_credential() -> None:
    """The timer starts the export hourly (the stored policy says whether it is due); the unit
    unlocks as rallypoint.service does, has no network, and is scored like the other services."""
    service, unit, timer = directives(SERVICE), directives(EXPORT_UNIT), directives(EXPORT_TIMER)
    assert unit["LoadCredentialEncrypted"] == service["LoadCredentialEncrypted"] and unit["User"] == service["User"]
    assert unit["ExecStart"] == ["/usr/local/bin/rallypoint compliance-export --scheduled --passphrase-file %d/passphrase"]
    assert unit["Type"] == ["oneshot"] and unit["PrivateNetwork"] == ["yes"] and unit["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert timer["OnCalendar"] == ["hourly"] and timer["Persistent"] == ["true"] and timer["WantedBy"] == ["timers.target"]
    build = (IMAGES / "build").read_text()
    enabled = re.search(r"^ENABLED_UNITS = (\[.*\])$", build, re.M)
    sandboxed = re.search(r"^SANDBOXED_UNITS = (\[.*?\])", build, re.M)
    assert enabled and "rallypoint-compliance-export.timer" in json.loads(enabled[1])
    assert sandboxed and "rallypoint-compliance-export.service" in json.loads(sandboxed[1])


def test_first_boot_restores_the_node_from_a_backup_on_a_stick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rallypoint-tty's third first-boot choice, with the real `rallypoint` doing the work as this
    user (not as the appliance's rallypoint user) and the sealing left out (no systemd here)."""
    origin, restored, stick = tmp_path / "origin", tmp_path / "restored", tmp_path / "media" / "BACKUPS"
    stick.mkdir(parents=True)
    assert run_cli(origin, "init", "--workspace", "acme", "--user", "alice").returncode == 0
    assert run_cli(origin, "channel", "create", "general").returncode == 0
    assert run_cli(origin, "post", "general", "before the disk died").returncode == 0
    assert run_cli(origin, "backup", "--to", str(stick)).returncode == 0
    (stick / "notes.txt").write_text("not a backup")

    tty = load_script("rallypoint-tty")
    answers, sealed = iter(["3", "1"]), []
    monkeypatch.setattr(tty, "MEDIA", tmp_path / "media")
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    monkeypatch.setattr(tty.getpass, "getpass", lambda prompt="": PASSPHRASE)
    monkeypatch.setattr(tty, "run_node", lambda args, capture=False, **env: run_cli(restored, *args, passphrase=env.get("RALLYPOINT_PASSPHRASE")))
    monkeypatch.setattr(tty, "seal_for_service", sealed.append)
    assert tty.first_boot() == PASSPHRASE
    assert sealed == [PASSPHRASE]
    read = run_cli(restored, "read", "general", "--json")
    assert [m["text"] for m in json.loads(read.stdout)] == ["before the disk died"]


async def test_a_wiped_node_is_set_aside_for_a_fresh_enrollment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rallypoint-tty on a node whose revocation arrived: it recognises the wiped store by the
    real `rallypoint`'s exit status, and ERASE sets it aside, drops the sealed passphrase and
    leaves an empty home for the first-boot setup."""
    alpha, bravo = await make_workspace(tmp_path, "bravo")
    async with alpha, bravo:
        stick = await revocation_on_stick(alpha, bravo, tmp_path)
        assert (await import_bundles(bravo, stick)).wiped
    home, credential = tmp_path / "bravo", tmp_path / "rallypoint-passphrase"
    credential.write_text("sealed")

    tty = load_script("rallypoint-tty")
    commands: list[tuple[str, ...]] = []
    monkeypatch.setattr(tty, "run_node", lambda args, capture=False, **env: run_cli(home, *args, passphrase=env.get("RALLYPOINT_PASSPHRASE")))
    assert tty.wiped_reason() is not None and "stolen" in tty.wiped_reason()
    monkeypatch.setattr(tty, "run_node", lambda args, capture=False, **env: run_cli(tmp_path / "alpha", *args, passphrase=PASSPHRASE))
    assert tty.wiped_reason() is None  # a node in service is not taken for a wiped one

    monkeypatch.setattr(tty, "NODE_HOME", home)
    monkeypatch.setattr(tty, "CREDENTIAL", credential)
    monkeypatch.setattr(tty, "NODE_USER", pwd.getpwuid(os.getuid()).pw_name)
    monkeypatch.setattr(tty, "systemctl", lambda *args: commands.append(args))
    monkeypatch.setattr(tty, "pause", lambda text="": None)
    monkeypatch.setattr("builtins.input", lambda prompt="": "ERASE")
    tty.offer_fresh_start("this node was revoked")
    assert commands == [("stop", tty.SERVICE)]
    assert not credential.exists()
    assert home.is_dir() and list(home.iterdir()) == []
    (kept,) = tmp_path.glob("bravo.wiped-*")
    assert (kept / "node.db").exists()


def nft_set_elements(text: str, name: str) -> set[str]:
    """The elements of a named set as nftables.conf declares them."""
    match = re.search(rf"set {name} {{\s*type \S+\s*flags interval\s*(?:elements = {{ (?P<elements>[^}}]*) }}\s*)?}}", text)
    assert match is not None, f"no set {name} in nftables.conf"
    return {e.strip() for e in (match["elements"] or "").split(",") if e.strip()}


def test_firewall_lets_in_only_mdns_and_the_sync_port_from_the_default_allowlist() -> None:
    text = NFTABLES.read_text()
    assert f"define sync_port = {DEFAULT_PORT}" in text
    assert "type filter hook input priority filter; policy drop;" in text
    assert 'iif "lo" accept' in text and "ct state established,related accept" in text
    # The node's own default allowlist: its private ranges here (loopback is `iif "lo"`) ...
    private = nft_set_elements(text, "private_v4") | nft_set_elements(text, "private_v6")
    assert private == {str(n) for n in DEFAULT_ALLOWED if not n.is_loopback}
    # ... and its interface networks, filled at run time by the unit's script.
    firewall = load_script("rallypoint-firewall-networks")
    assert firewall.TABLE == "inet rallypoint" and "table inet rallypoint {" in text
    for name in firewall.SETS.values():
        assert nft_set_elements(text, name) == set()
    accepts = [line.strip() for line in text.splitlines() if line.strip().endswith("accept") and "dport" in line]
    assert sorted(accepts) == sorted([
        *(f"{proto} dport {port} {family} saddr @{kind}_v{version} accept"
          for proto, port in (("udp", "5353"), ("tcp", "$sync_port")) for family, version in (("ip", 4), ("ip6", 6)) for kind in ("private", "own")),
        "udp sport 547 udp dport 546 ip6 saddr fe80::/10 accept",  # DHCPv6 replies to this host's client
    ])


def test_firewall_networks_unit_follows_nftables_with_net_admin_only() -> None:
    unit = directives(FIREWALL_UNIT)
    assert unit["ExecStart"] == ["/usr/local/sbin/rallypoint-firewall-networks"]
    assert unit["ExecReload"] == ["/usr/local/sbin/rallypoint-firewall-networks --once"]
    # Loading nftables.conf empties the sets: the unit is restarted and reloaded with nftables.
    assert unit["BindsTo"] == ["nftables.service"] and unit["ReloadPropagatedFrom"] == ["nftables.service"]
    assert unit["After"] == ["nftables.service"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["RestrictAddressFamilies"] == ["AF_NETLINK AF_UNIX"] and unit["ProtectSystem"] == ["strict"]
    assert "PrivateNetwork" not in unit  # it must see and change this machine's own network
    assert unit["WantedBy"] == ["multi-user.target"]
    assert os.access(SBIN / "rallypoint-firewall-networks", os.X_OK)


@pytest.mark.root
@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0, reason="nft --check needs the nftables package and root (netlink)")
def test_firewall_config_parses_on_this_host() -> None:
    result = subprocess.run(["nft", "--check", "--file", str(NFTABLES)], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, result.stderr


def test_usb_sticks_mount_noexec_for_the_rallypoint_user() -> None:
    rule = USB_RULE.read_text()
    assert 'ENV{ID_BUS}=="usb"' in rule and 'ENV{SYSTEMD_WANTS}+="rallypoint-usb-mount@%k.service"' in rule
    assert "RUN" not in rule  # udev itself runs nothing
    unit = directives(USB_UNIT)
    assert unit["BindsTo"] == ["dev-%i.device"]  # pulled stick: the unit stops, the filesystem is unmounted
    assert unit["ExecStart"] == ["/usr/local/sbin/rallypoint-usb-mount add %I"]
    usb = load_script("rallypoint-usb-mount")
    for fs_type in ("vfat", "exfat", "ntfs", "ext4"):
        driver, options = usb.mount_options(fs_type, 998, 997)
        assert {"nosuid", "nodev", "noexec"} <= set(options.split(","))
        if fs_type != "ext4":
            assert {"uid=998", "gid=997", "fmask=0177", "dmask=0077"} <= set(options.split(","))
    assert usb.mount_options("ntfs", 1, 1)[0] == "ntfs3"
    for refused in ("iso9660", "squashfs", ""):
        with pytest.raises(ValueError):
            usb.mount_options(refused, 1, 1)
    assert usb.mount_name("COURIER 1", "sdb1") == "COURIER_1"
    assert usb.mount_name("../..", "sdb1") == "_.."
    assert usb.mount_name("", "sdb1") == "usb-sdb1"
    assert usb.mount_name("x" * 300, "sdb1") == "x" * 64


def test_sign_update_is_the_appliance_verifier() -> None:
    assert (IMAGES / "sign-update").resolve() == (SBIN / "rallypoint-update").resolve()
    assert os.access(IMAGES / "build", os.X_OK)


# --- signed updates -------------------------------------------------------------------------


def pack_wheel(wheel: Path, files: dict[str, bytes]) -> Path:
    """Writes a wheel from its files, adding the RECORD (hash and size of each)."""
    dist_info = next(path.split("/")[0] for path in files if path.endswith(".dist-info/WHEEL"))
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}" for path, data in files.items()]
    files = {**files, f"{dist_info}/RECORD": ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()}
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def write_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    dist_info = f"{name}-{version}.dist-info"
    return pack_wheel(directory / f"{name}-{version}-py3-none-any.whl", {
        **files,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    })


def fake_rallypoint_wheel(directory: Path, version: str) -> Path:
    """A stand-in for the project's wheel whose `rallypoint --version` says `version`."""
    module = f'def main():\n    print("rallypoint {version}")\n'.encode()
    return write_wheel(directory, "rallypoint", version, {
        "rallypoint_stub.py": module,
        f"rallypoint-{version}.dist-info/entry_points.txt": b"[console_scripts]\nrallypoint = rallypoint_stub:main\n",
    })


def revised_wheel(wheel: Path, directory: Path, version: str) -> Path:
    """The project's real wheel under another version number (dist-info renamed, METADATA and
    appliance.__version__, which `rallypoint --version` prints, changed, RECORD redone)."""
    old_version = wheel.name.split("-")[1]
    old_info, new_info = f"rallypoint-{old_version}.dist-info/", f"rallypoint-{version}.dist-info/"
    with zipfile.ZipFile(wheel) as archive:
        files = {i.filename.replace(old_info, new_info): archive.read(i) for i in archive.infolist() if not i.filename.endswith("/RECORD")}
    metadata = files[new_info + "METADATA"].decode()
    files[new_info + "METADATA"] = metadata.replace(f"\nVersion: {old_version}\n", f"\nVersion: {version}\n", 1).encode()
    package = files["appliance/__init__.py"].decode()
    files["appliance/__init__.py"] = package.replace(f'__version__ = "{old_version}"', f'__version__ = "{version}"').encode()
    return pack_wheel(directory / wheel.name.replace(f"-{old_version}-", f"-{version}-"), files)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    secret, public = update.keygen(tmp_path / "keys", "test key")
    assert secret.stat().st_mode & 0o777 == 0o600
    return secret, public


def test_a_signed_update_verifies_and_any_change_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    secret, public = keys
    wheel = fake_rallypoint_wheel(tmp_path, "0.2.0")
    dependency = write_wheel(tmp_path, "helper", "1.0", {"helper.py": b"X = 1\n"})
    stick = tmp_path / "stick"
    manifest = update.sign(secret, [wheel, dependency], stick / "rallypoint-update")
    assert manifest.version == "0.2.0" and len(manifest.wheels) == 2
    trusted = update.read_key_file(public)
    staging = tmp_path / "staging"
    staging.mkdir()
    verified, staged = update.verify_and_stage(update.find_update(stick), trusted, staging)
    assert verified == manifest and [p.read_bytes() for p in staged] == [wheel.read_bytes(), dependency.read_bytes()]

    other_secret, other_public = update.keygen(tmp_path / "other", "someone else")
    with pytest.raises(update.UpdateRejected, match="signature does not verify"):
        update.verify_and_stage(stick / "rallypoint-update", update.read_key_file(other_public), staging)

    body = (stick / "rallypoint-update/manifest.json").read_bytes()
    signature = (stick / "rallypoint-update/manifest.sig").read_bytes()
    with pytest.raises(update.UpdateRejected, match="signature does not verify"):
        update.verify_manifest(body.replace(b"0.2.0", b"0.3.0"), signature, trusted)
    with pytest.raises(update.UpdateRejected, match="signature does not verify"):
        update.verify_manifest(body, b"not base64!", trusted)
    raw = base64.b64encode(bytes(update.nacl.signing.SigningKey(update.read_key_file(secret)).sign(body).signature))
    with pytest.raises(update.UpdateRejected, match="signature does not verify"):  # no context string: not an update signature
        update.verify_manifest(body, raw, trusted)

    carried = stick / "rallypoint-update" / dependency.name
    carried.write_bytes(carried.read_bytes() + b"\0")
    with pytest.raises(update.UpdateRejected, match="does not match the signed manifest"):
        update.verify_and_stage(stick / "rallypoint-update", trusted, staging)
    carried.unlink()
    with pytest.raises(update.UpdateRejected, match="cannot read"):
        update.verify_and_stage(stick / "rallypoint-update", trusted, staging)


def test_signing_refuses_ambiguous_updates(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    secret, _ = keys
    helper = write_wheel(tmp_path, "helper", "1.0", {"helper.py": b""})
    with pytest.raises(ValueError, match="exactly one rallypoint wheel"):
        update.sign(secret, [helper], tmp_path / "out")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    with pytest.raises(ValueError, match="exactly one rallypoint wheel"):
        update.sign(secret, [fake_rallypoint_wheel(first, "1.0"), fake_rallypoint_wheel(second, "2.0")], tmp_path / "out")
    with pytest.raises(update.UpdateRejected, match="not a Rallypoint update key"):
        update.sign(tmp_path / "a" / "rallypoint-1.0-py3-none-any.whl", [fake_rallypoint_wheel(tmp_path, "3.0")], tmp_path / "out2")


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A throwaway venv (pip from ensurepip: offline) holding a stand-in rallypoint 0.1.0."""
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=VENV_TIMEOUT_S)
    wheels = tmp_path / "installed"
    wheels.mkdir()
    pip = [str(target / "bin/python"), "-m", "pip", "--isolated", "install", "--quiet", "--no-index", "--no-deps"]
    subprocess.run([*pip, str(fake_rallypoint_wheel(wheels, "0.1.0"))], check=True, timeout=VENV_TIMEOUT_S)
    return target


def installed(venv: Path) -> str:
    return subprocess.run([str(venv / "bin/rallypoint"), "--version"], capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT_S).stdout.strip()


@pytest.mark.timeout(600)
def test_apply_installs_a_signed_newer_update_and_nothing_else(tmp_path: Path, keys: tuple[Path, Path], venv: Path) -> None:
    secret, public = keys
    trusted = update.read_key_file(public)

    def signed(version: str, name: str) -> Path:
        wheels = tmp_path / f"wheels-{name}"
        wheels.mkdir()
        update.sign(secret, [fake_rallypoint_wheel(wheels, version)], tmp_path / name / "rallypoint-update")
        return tmp_path / name / "rallypoint-update"

    tampered = signed("0.3.0", "tampered")
    wheel = tampered / "rallypoint-0.3.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes().replace(b"rallypoint 0.3.0", b"rallypoint 6.6.6"))
    with pytest.raises(update.UpdateRejected, match="does not match"):
        update.apply(tampered, trusted, venv, allow_downgrade=False, restart_service=False)
    assert installed(venv) == "rallypoint 0.1.0"

    foreign = signed("0.3.0", "foreign")
    _, other_public = update.keygen(tmp_path / "other", "someone else")
    with pytest.raises(update.UpdateRejected, match="signature"):
        update.apply(foreign, update.read_key_file(other_public), venv, allow_downgrade=False, restart_service=False)
    assert installed(venv) == "rallypoint 0.1.0"

    assert update.apply(signed("0.2.0", "good"), trusted, venv, allow_downgrade=False, restart_service=False) == "0.2.0"
    assert installed(venv) == "rallypoint 0.2.0"

    older = signed("0.1.5", "older")  # a genuine but older update, replayed
    with pytest.raises(update.UpdateRejected, match="not newer"):
        update.apply(older, trusted, venv, allow_downgrade=False, restart_service=False)
    assert installed(venv) == "rallypoint 0.2.0"


# --- the real build -------------------------------------------------------------------------


def build_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: images/build runs debootstrap and chroot (run the tests as root, e.g. in CI)"
    if shutil.which("debootstrap") is None:
        return "debootstrap not installed: apt-get install debootstrap"
    return None


requires_build = pytest.mark.skipif(build_skip_reason() is not None, reason=build_skip_reason() or "")


def in_chroot(rootfs: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """`cmd` in the tree, with /proc mounted in a private mount namespace (gone when it exits)."""
    script = 'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"'
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(rootfs), *cmd], capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S * 5)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """OUT of one real `images/build --stage rootfs` (removed afterwards: it is large)."""
    out = tmp_path_factory.mktemp("image")
    result = subprocess.run([str(IMAGES / "build"), "--stage", "rootfs", "--out", str(out)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"images/build failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.root
@requires_build
@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_rootfs_build_checks_itself(built: Path) -> None:
    rootfs = built / "rootfs"
    expected = f"rallypoint {importlib.metadata.version('rallypoint')}"
    assert (built / "checks/rallypoint-version.txt").read_text().strip() == expected
    assert in_chroot(rootfs, "rallypoint", "--version").stdout.strip() == expected
    assert (rootfs / "etc/systemd/system/rallypoint.service").read_bytes() == SERVICE.read_bytes()

    verified = in_chroot(rootfs, "systemd-analyze", "verify", "rallypoint.service", "rallypoint-console.service", "rallypoint-firewall-networks.service", "rallypoint-usb-mount@sdb1.service")
    assert verified.returncode == 0 and "rallypoint" not in verified.stdout + verified.stderr, verified.stdout + verified.stderr
    # ... and verify does look: a unit whose ExecStart does not exist fails it.
    broken = rootfs / "etc/systemd/system/rp-broken.service"
    broken.write_text(SERVICE.read_text().replace("/usr/local/bin/rallypoint serve", "/usr/local/bin/no-such-binary serve"))
    try:
        failed = in_chroot(rootfs, "systemd-analyze", "verify", "rp-broken.service")
    finally:
        broken.unlink()
    assert failed.returncode != 0 and "no-such-binary" in failed.stdout + failed.stderr

    checked = in_chroot(rootfs, "nft", "--check", "--file", "/etc/nftables.conf")
    assert checked.returncode == 0, checked.stderr
    (rootfs / "tmp/bad.nft").write_text(NFTABLES.read_text().replace("policy drop;", "policy dropp;"))
    assert in_chroot(rootfs, "nft", "--check", "--file", "/tmp/bad.nft").returncode != 0


@pytest.mark.root
@requires_build
@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_rootfs_has_the_user_units_and_no_password_login(built: Path) -> None:
    rootfs = built / "rootfs"
    users = {line.split(":")[0]: line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()}
    user = users["rallypoint"]
    assert user[5:] == ["/var/lib/rallypoint", "/usr/sbin/nologin"] and int(user[2]) < 1000  # a system user
    home = (rootfs / "var/lib/rallypoint").stat()
    assert home.st_uid == int(user[2]) and home.st_mode & 0o777 == 0o700
    shadow = {line.split(":")[0]: line.split(":")[1] for line in (rootfs / "etc/shadow").read_text().splitlines()}
    assert shadow["root"].startswith("!") and shadow["rallypoint"] in ("!", "!*", "*")
    sshd_config = rootfs / "etc/ssh/sshd_config"
    if (rootfs / "usr/sbin/sshd").exists():  # none is installed today; if one ever is, it takes keys only
        text = sshd_config.read_text() + "".join(p.read_text() for p in (rootfs / "etc/ssh/sshd_config.d").glob("*.conf"))
        assert "PasswordAuthentication no" in text and "KbdInteractiveAuthentication no" in text
    units = [
        "rallypoint.service",
        "rallypoint-console.service",
        "nftables.service",
        "rallypoint-firewall-networks.service",
        "systemd-networkd.service",
        "rallypoint-backup.timer",
        "rallypoint-compliance-export.timer",
        "getty@tty1.service",
    ]
    states = in_chroot(rootfs, "systemctl", "is-enabled", *units).stdout.split()
    assert states == ["enabled"] * 7 + ["masked"]  # tty1 is the console's
    assert (rootfs / "etc/machine-id").read_text() == ""
    assert "DEVELOPMENT" in (rootfs / "etc/rallypoint/update-signing.pub").read_text()
    assert not list(rootfs.rglob("update-signing.key"))  # the dev key's secret half stays in OUT
    assert (built / "dev-update-key/update-signing.key").exists()


@pytest.mark.root
@requires_build
@pytest.mark.timeout(BUILD_TIMEOUT_S + 900)
def test_rootfs_applies_a_signed_update_and_refuses_a_tampered_one(built: Path, tmp_path: Path) -> None:
    rootfs = built / "rootfs"
    secret = built / "dev-update-key/update-signing.key"
    (real_wheel,) = (built / "wheels").glob("rallypoint-*.whl")
    current = importlib.metadata.version("rallypoint")
    newer = f"{current}.post1"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    new_wheel = revised_wheel(real_wheel, wheels, newer)

    def stick(name: str, key: Path, wheel: Path = new_wheel) -> str:
        folder = rootfs / "tmp" / name
        shutil.rmtree(folder, ignore_errors=True)
        update.sign(key, [wheel], folder / "rallypoint-update")
        return f"/tmp/{name}"

    tampered = stick("tampered", secret)
    carried = rootfs / "tmp/tampered/rallypoint-update" / new_wheel.name
    data = bytearray(carried.read_bytes())
    data[len(data) // 2] ^= 0xFF
    carried.write_bytes(bytes(data))
    refused = in_chroot(rootfs, "rallypoint-update", "apply", tampered)
    assert refused.returncode == 2 and "does not match the signed manifest" in refused.stderr and "nothing was installed" in refused.stderr

    other_secret, _ = update.keygen(tmp_path / "other", "not the baked key")
    refused = in_chroot(rootfs, "rallypoint-update", "apply", stick("foreign", other_secret))
    assert refused.returncode == 2 and "signature does not verify" in refused.stderr
    assert in_chroot(rootfs, "rallypoint", "--version").stdout.strip() == f"rallypoint {current}"

    applied = in_chroot(rootfs, "rallypoint-update", "apply", stick("good", secret))
    assert applied.returncode == 0, applied.stderr
    assert in_chroot(rootfs, "rallypoint", "--version").stdout.strip() == f"rallypoint {newer}"
    replayed = in_chroot(rootfs, "rallypoint-update", "apply", stick("good", secret))
    assert replayed.returncode == 2 and "not newer" in replayed.stderr
    # Back to the built version (the other tests share this tree): a deliberate downgrade.
    restored = in_chroot(rootfs, "rallypoint-update", "apply", "--allow-downgrade", stick("original", secret, real_wheel))
    assert restored.returncode == 0, restored.stderr
    assert in_chroot(rootfs, "rallypoint", "--version").stdout.strip() == f"rallypoint {current}"


PROBE = """
import socket, sys
source, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET) as s:
    s.settimeout(2)
    s.bind((source, 0))
    try:
        s.connect((target, port))
        print("open")
    except OSError:
        print("blocked")
"""
LISTENER = """
import socket, sys, time
servers = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
    s.bind(("::", port))
    s.listen()
    servers.append(s)
time.sleep(120)
"""
FIELD_NET = "198.51.100"  # TEST-NET-2: a field network numbered outside the private ranges
FIELD_NET6 = "2001:db8:1:"  # documentation prefix: the same network's IPv6 side
MOVED_NET = "198.18.0"  # benchmarking range: the network the appliance's cable is moved to
FOREIGN_NET = "203.0.113"  # TEST-NET-3: a network the appliance is not on
SETTLE_TIMEOUT_S = 10


@requires_root
@requires_build
@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_firewall_admits_the_sync_port_from_the_appliances_own_networks(built: Path, tmp_path: Path) -> None:
    """The image's nftables.conf and rallypoint-firewall-networks (its ExecStart, run by the
    image's own python3 and nft) in a namespace on a two-node LAN numbered outside the private
    ranges: the peer reaches the sync port over IPv4 and IPv6; an address the appliance can
    answer but whose network it is not on does not, nor does any address reach another port;
    when the appliance's address moves to another network the firewall follows by itself; and
    the unit's reload command refills the sets that reloading nftables.conf empties."""
    rootfs = built / "rootfs"
    unit = directives(FIREWALL_UNIT)
    with BridgeLan(2) as lan:
        appliance, peer = lan.nodes
        for index, node in enumerate(lan.nodes, 1):
            node.ip("addr", "add", f"{FIELD_NET}.{index}/24", "dev", "eth0")
            node.ip("addr", "add", f"{FIELD_NET6}:{index}/64", "dev", "eth0", "nodad")
        appliance.ip("addr", "add", f"{FIELD_NET}.200/25", "dev", "eth0")  # overlaps the /24: nft refuses overlaps unless merged
        peer.ip("addr", "add", f"{FOREIGN_NET}.2/24", "dev", "eth0")
        appliance.ip("route", "add", f"{FOREIGN_NET}.0/24", "dev", "eth0")  # replies could reach it: only the firewall can stop it
        appliance.run([sys.executable, "-c", LISTENER, str(DEFAULT_PORT), str(DEFAULT_PORT + 1)])

        def probe(source: str, target: str, port: int = DEFAULT_PORT) -> str:
            return peer.check([sys.executable, "-c", PROBE, source, target, str(port)]).stdout.strip()

        def in_image(*argv: str) -> subprocess.CompletedProcess[str]:
            return appliance.check(["chroot", str(rootfs), *argv])

        def own_sets() -> tuple[set[str], set[str]]:
            listed = []
            for name in ("own_v4", "own_v6"):
                result = in_image("nft", "--json", "list", "set", "inet", "rallypoint", name)
                assert result.returncode == 0, result.stderr
                (found,) = [entry["set"] for entry in json.loads(result.stdout)["nftables"] if "set" in entry]
                listed.append({f"{e['prefix']['addr']}/{e['prefix']['len']}" if isinstance(e, dict) else e for e in found.get("elem", [])})
            return listed[0], listed[1]

        def wait_for_own_v4(expected: set[str]) -> set[str]:
            """own_v6 once own_v4 holds exactly `expected` (bounded)."""
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while (sets := own_sets())[0] != expected:
                assert time.monotonic() < deadline, f"own_v4 is {sets[0]}, not {expected}; rallypoint-firewall-networks said:\n{log.read_text()}"
                time.sleep(0.1)
            return sets[1]

        # Without the firewall every probe below gets through: what is blocked later, the firewall blocks.
        deadline = time.monotonic() + 10  # until the listener is up
        while probe(f"{FIELD_NET}.2", f"{FIELD_NET}.1") != "open":
            assert time.monotonic() < deadline, "the sync port never answered"
            time.sleep(0.2)
        assert probe(f"{FOREIGN_NET}.2", f"{FIELD_NET}.1") == "open"
        assert probe(f"{FIELD_NET}.2", f"{FIELD_NET}.1", DEFAULT_PORT + 1) == "open"

        loaded = in_image("nft", "--file", "/etc/nftables.conf")
        assert loaded.returncode == 0, loaded.stderr
        assert own_sets() == (set(), set())
        assert probe(f"{FIELD_NET}.2", f"{FIELD_NET}.1") == "blocked"  # the file alone admits the private ranges only
        assert probe(peer.address or "", appliance.address or "") == "open"  # BridgeLan's 10.231.0.x

        log = tmp_path / "firewall-networks.log"
        with log.open("w") as stderr:
            follower = appliance.run(["chroot", str(rootfs), *unit["ExecStart"][0].split()], stderr=stderr)
        own_v6 = wait_for_own_v4({f"{FIELD_NET}.0/24", f"{lan.subnet}.0/24"})  # no 127.0.0.0/8: loopback is left out
        assert f"{FIELD_NET6}:/64" in own_v6 and own_v6 <= {f"{FIELD_NET6}:/64", "fe80::/64"}, own_v6
        assert probe(f"{FIELD_NET}.2", f"{FIELD_NET}.1") == "open"
        assert probe(f"{FIELD_NET6}:2", f"{FIELD_NET6}:1") == "open"
        assert probe(f"{FOREIGN_NET}.2", f"{FIELD_NET}.1") == "blocked"
        assert probe(f"{FIELD_NET}.2", f"{FIELD_NET}.1", DEFAULT_PORT + 1) == "blocked"
        assert probe(peer.address or "", appliance.address or "", DEFAULT_PORT + 1) == "blocked"

        # The cable moves to another network: the old one is no longer admitted, the new one is.
        for address in (f"{FIELD_NET}.1/24", f"{FIELD_NET}.200/25"):
            appliance.ip("addr", "del", address, "dev", "eth0")
        appliance.ip("addr", "add", f"{MOVED_NET}.1/24", "dev", "eth0")
        appliance.ip("route", "add", f"{FIELD_NET}.0/24", "dev", "eth0")  # still answerable, no longer its network
        peer.ip("addr", "add", f"{MOVED_NET}.2/24", "dev", "eth0")
        wait_for_own_v4({f"{MOVED_NET}.0/24", f"{lan.subnet}.0/24"})
        assert probe(f"{MOVED_NET}.2", f"{MOVED_NET}.1") == "open"
        assert probe(f"{FIELD_NET}.2", f"{MOVED_NET}.1") == "blocked"

        # Reloading nftables.conf (nftables.service's reload) empties the sets; the unit's reload refills them.
        assert in_image("nft", "--file", "/etc/nftables.conf").returncode == 0
        assert own_sets()[0] == set()
        reloaded = in_image(*unit["ExecReload"][0].split())
        assert reloaded.returncode == 0, reloaded.stderr
        assert own_sets()[0] == {f"{MOVED_NET}.0/24", f"{lan.subnet}.0/24"}
        assert follower.poll() is None, log.read_text()


OVMF = Path("/usr/share/ovmf/OVMF.fd")
BOOT_TIMEOUT_S = 600  # QEMU without KVM (KVM cannot run OVMF on every host): about a minute here
DIAGNOSTICS_UNIT = """[Unit]
Description=test_image: report the booted appliance's state on the serial port, then power off
After=multi-user.target rallypoint-console.service
# The serial getty hangs the port up when it starts, which would cut the report short: it goes.
Conflicts=serial-getty@ttyS0.service
After=serial-getty@ttyS0.service

[Service]
Type=oneshot
StandardOutput=file:/dev/ttyS0
StandardError=inherit
ExecStart=/bin/sh -c 'echo RP-BOOTED $(systemctl is-active multi-user.target); systemctl --failed --no-legend --plain | sed "s/^/RP-FAILED /"; for u in rallypoint-console nftables rallypoint-firewall-networks systemd-networkd; do echo RP-ACTIVE $u $(systemctl is-active $u); done; echo RP-SERVICE $(systemctl show -P ConditionResult rallypoint.service); nft list tables | sed "s/^/RP-NFT /"; for i in $(seq 20); do nft list set inet rallypoint own_v4 | grep -q / && break; sleep 0.5; done; nft list set inet rallypoint own_v4 | grep -o "[0-9.]*/[0-9]*" | sed "s/^/RP-OWN-V4 /"; echo RP-ROOT $(findmnt -no OPTIONS /)'
# Also after a failed report: the test then fails on the report, not on a timeout.
ExecStopPost=/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
"""


def image_skip_reason() -> str | None:
    if shutil.which("qemu-system-x86_64") is None or not OVMF.exists():
        return "booting the image needs QEMU and UEFI firmware: apt-get install qemu-system-x86 ovmf"
    for tool, package in (("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"), ("sfdisk", "fdisk"), ("debugfs", "e2fsprogs")):
        if shutil.which(tool) is None:
            return f"the image stage needs {tool}: apt-get install {package}"
    return build_skip_reason()


@pytest.mark.skipif(image_skip_reason() is not None, reason=image_skip_reason() or "")
@pytest.mark.timeout(BUILD_TIMEOUT_S + BOOT_TIMEOUT_S + 600)
def test_image_boots_to_the_console_with_the_firewall_up(built: Path, tmp_path: Path) -> None:
    """The image stage on the built tree, then a UEFI boot in QEMU of a copy to which a test-only
    unit is added (written with debugfs into the root filesystem) that reports on the serial port."""
    result = subprocess.run([str(IMAGES / "build"), "--stage", "image", "--reuse-rootfs", "--out", str(built)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"images/build --stage image failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    disk = tmp_path / "boot.img"
    subprocess.run(["cp", "--sparse=always", str(built / "rallypoint.img"), str(disk)], check=True, timeout=COMMAND_TIMEOUT_S)
    table = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True, timeout=COMMAND_TIMEOUT_S).stdout
    root_start = json.loads(table)["partitiontable"]["partitions"][1]["start"]
    unit = tmp_path / "rp-diagnostics.service"
    unit.write_text(DIAGNOSTICS_UNIT)
    root_fs = f"{disk}?offset={root_start * 512}"
    for request in (f"write {unit} /etc/systemd/system/{unit.name}", f"symlink /etc/systemd/system/multi-user.target.wants/{unit.name} /etc/systemd/system/{unit.name}"):
        subprocess.run(["debugfs", "-w", "-R", request, root_fs], check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)

    serial = tmp_path / "serial.log"
    qemu = [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "1024",
        "-bios", str(OVMF), "-drive", f"file={disk},format=raw,if=virtio", "-nic", "user,model=virtio-net-pci",
        "-display", "none", "-serial", f"file:{serial}", "-no-reboot",
    ]
    try:
        subprocess.run(qemu, capture_output=True, timeout=BOOT_TIMEOUT_S, check=True)  # ends at the unit's poweroff
    except subprocess.TimeoutExpired:
        pytest.fail(f"the image did not boot and power off within {BOOT_TIMEOUT_S} s; serial console:\n{serial.read_text(errors='replace')[-4000:]}")
    report = [line.strip() for line in serial.read_text(errors="replace").splitlines() if line.startswith("RP-")]
    assert "RP-BOOTED active" in report, report
    assert not [line for line in report if line.startswith("RP-FAILED")], report
    for unit_name in ("rallypoint-console", "nftables", "rallypoint-firewall-networks", "systemd-networkd"):
        assert f"RP-ACTIVE {unit_name} active" in report, report
    assert "RP-SERVICE no" in report, report  # first boot: no sealed passphrase yet, so skipped, not failed
    assert "RP-NFT table inet rallypoint" in report, report
    assert "RP-OWN-V4 10.0.2.0/24" in report, report  # QEMU's user network, by DHCP: the firewall admits it, sandboxed as it runs
    assert any(line.startswith("RP-ROOT rw,") for line in report), report
