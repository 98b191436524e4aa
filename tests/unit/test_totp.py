"""The pure parts of sign-in and MFA: TOTP checks (window, replays), recovery codes and their
hashes, the lock-out schedule, one-time secrets, and the QR code drawn as text."""

from __future__ import annotations

import pyotp
import pytest
import segno
from hypothesis import given
from hypothesis import strategies as st

from appliance import crypto, totp, user_keys
from tui.qr import qr_lines

SECRET = totp.new_secret(bytes(range(20)))
NOW = 1_800_000_000_000
STEP = totp.step_at(NOW)


def code(step: int) -> str:
    return pyotp.TOTP(SECRET).at(step * 30)


def test_the_secret_and_uri_are_what_authenticator_apps_read() -> None:
    assert SECRET == "AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT" and totp.grouped(SECRET).count(" ") == 7
    uri = totp.provisioning_uri(SECRET, "bob", "acme")
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP) and parsed.secret == SECRET and parsed.issuer == "Rallypoint" and parsed.name == "bob@acme"
    with pytest.raises(ValueError):
        totp.new_secret(bytes(19))


@given(offset=st.integers(-3, 3), window=st.integers(0, 3))
def test_a_code_is_accepted_exactly_within_the_window(offset: int, window: int) -> None:
    check = totp.check_code(SECRET, code(STEP + offset), NOW, window, 0)
    if abs(offset) <= window:
        assert check == totp.CodeCheck(totp.CodeVerdict.ACCEPTED, STEP + offset)
    else:
        assert check.verdict is totp.CodeVerdict.WRONG


@given(last=st.integers(STEP - 2, STEP + 2))
def test_a_code_not_newer_than_the_last_accepted_step_is_a_replay(last: int) -> None:
    check = totp.check_code(SECRET, code(STEP), NOW, 1, last)
    assert check.verdict is (totp.CodeVerdict.ACCEPTED if STEP > last else totp.CodeVerdict.REPLAYED)


@given(st.text(max_size=12))
def test_anything_else_is_wrong(typed: str) -> None:
    real = {code(s) for s in range(STEP - 1, STEP + 2)}
    if "".join(typed.split()) not in real:
        assert totp.check_code(SECRET, typed, NOW, 1, 0).verdict is totp.CodeVerdict.WRONG


@given(st.binary(min_size=120, max_size=120), st.binary(min_size=16, max_size=16))
def test_recovery_codes_match_only_their_own_hash(random: bytes, salt: bytes) -> None:
    codes = totp.new_recovery_codes(random)
    assert len(codes) == 10 and all(totp.looks_like_recovery_code(c) for c in codes)
    digests = [totp.recovery_digest(c, salt) for c in codes]
    for plain, digest in zip(codes, digests, strict=True):
        assert totp.recovery_digest(plain.lower().replace("-", " "), salt) == digest  # as typed
        assert totp.recovery_digest(plain, bytes(16) if salt != bytes(16) else b"\x01" * 16) != digest
    assert len(set(digests)) == len(set(codes))


def test_the_lock_out_doubles_from_the_fifth_failure_up_to_fifteen_minutes() -> None:
    assert [totp.locked_until_after(n, 0) for n in (1, 4, 5, 6, 7)] == [0, 0, 30_000, 60_000, 120_000]
    assert totp.locked_until_after(10, 5) == 5 + 15 * 60_000 and totp.locked_until_after(10_000, 0) == 15 * 60_000


@given(st.binary(min_size=16, max_size=16))
def test_one_time_secrets_are_long_enough_and_readable(random: bytes) -> None:
    secret = user_keys.one_time_secret(random)
    user_keys.check_secret(secret)
    assert len(secret) == 19 and secret.count("-") == 3


def test_a_user_key_opens_only_with_its_secret() -> None:
    fast = crypto.KdfParams(1, 8192)
    derived = user_keys.derive("bob's secret", bytes(16), fast)
    sealed = user_keys.seal(derived, b"seed" * 8, bytes(24))
    assert user_keys.open_sealed(derived, sealed) == b"seed" * 8
    assert user_keys.open_sealed(user_keys.derive("bob's secreT", bytes(16), fast), sealed) is None
    with pytest.raises(Exception, match="at least 8"):
        user_keys.check_secret("short")


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=120))
def test_the_qr_code_drawn_as_text_holds_every_module(text: str) -> None:
    lines = qr_lines(text)
    matrix = segno.make(text, error="l", micro=False).matrix
    size = len(matrix) + 2
    assert len(lines) == (size + 1) // 2 and {len(line) for line in lines} == {size}
    for y, row in enumerate(matrix):
        for x, dark in enumerate(row):
            cell = lines[(y + 1) // 2][x + 1]
            top = (y + 1) % 2 == 0
            assert bool(dark) == (cell in ((" ", "▄") if top else (" ", "▀")))
