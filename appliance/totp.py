"""Second factors, as pure functions: RFC 6238 time-based codes (through pyotp), one-time
recovery codes and their salted hashes, and the lock-out after failed sign-ins. Time and
randomness are parameters: the node passes its clock and its random source."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass

import pyotp

from appliance import ids

STEP_SECONDS = 30
DIGITS = 6
SECRET_BYTES = 20  # 160 bits, what RFC 4226 recommends
DEFAULT_WINDOW = 1  # steps either side of now accepted (clock skew)
MAX_WINDOW = 10  # five minutes either side: a field box whose clock drifted badly
ISSUER = "Rallypoint"
RECOVERY_CODES = 10
RECOVERY_CODE_CHARS = 12  # Crockford base32: 60 bits each
RECOVERY_SALT_BYTES = 16


class CodeVerdict(enum.Enum):
    ACCEPTED = "accepted"
    RECOVERY_USED = "recovery_used"  # a one-time recovery code stood in for a code (set by the MFA service)
    REPLAYED = "replayed"  # right code, but its step is not newer than the last one accepted
    WRONG = "wrong"


@dataclass(frozen=True)
class CodeCheck:
    verdict: CodeVerdict
    step: int  # the step the code was accepted for (0 unless ACCEPTED)


def new_secret(random: bytes) -> str:
    """The base32 secret an authenticator app is given, from SECRET_BYTES random bytes."""
    if len(random) != SECRET_BYTES:
        raise ValueError(f"a TOTP secret takes {SECRET_BYTES} random bytes")
    return base64.b32encode(random).decode("ascii")


def provisioning_uri(secret: str, account: str, workspace: str) -> str:
    """The otpauth:// URI a QR code carries (RFC 6238, SHA-1, 6 digits, 30 s)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=f"{account}@{workspace}", issuer_name=ISSUER)


def grouped(secret: str) -> str:
    """The secret in groups of four, easier to type into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def step_at(now_ms: int) -> int:
    return now_ms // 1000 // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(step * STEP_SECONDS)


def check_code(secret: str, code: str, now_ms: int, window: int, last_step: int) -> CodeCheck:
    """Accepts `code` if it is the code of a step within `window` steps of now and newer than
    `last_step` (the last step accepted for this user): a code seen once is refused after."""
    typed = "".join(code.split())
    if len(typed) != DIGITS or not typed.isdigit():
        return CodeCheck(CodeVerdict.WRONG, 0)
    now = step_at(now_ms)
    replayed = False
    for step in range(now - window, now + window + 1):
        if hmac.compare_digest(code_at(secret, step), typed):
            if step > last_step:
                return CodeCheck(CodeVerdict.ACCEPTED, step)
            replayed = True
    return CodeCheck(CodeVerdict.REPLAYED if replayed else CodeVerdict.WRONG, 0)


def looks_like_recovery_code(code: str) -> bool:
    return len(normalise_recovery_code(code)) == RECOVERY_CODE_CHARS


def new_recovery_codes(random: bytes) -> list[str]:
    """RECOVERY_CODES codes shown once, as XXXX-XXXX-XXXX, from RECOVERY_CODES * RECOVERY_CODE_CHARS random bytes."""
    if len(random) != RECOVERY_CODES * RECOVERY_CODE_CHARS:
        raise ValueError(f"recovery codes take {RECOVERY_CODES * RECOVERY_CODE_CHARS} random bytes")
    codes = []
    for i in range(RECOVERY_CODES):
        chunk = random[i * RECOVERY_CODE_CHARS : (i + 1) * RECOVERY_CODE_CHARS]
        plain = "".join(ids.CROCKFORD[b % 32] for b in chunk)
        codes.append("-".join(plain[j : j + 4] for j in range(0, RECOVERY_CODE_CHARS, 4)))
    return codes


def normalise_recovery_code(code: str) -> str:
    cleaned = "".join(ch for ch in code.upper() if ch not in " -\t")
    return cleaned.replace("O", "0").replace("I", "1").replace("L", "1")


def recovery_digest(code: str, salt: bytes) -> bytes:
    """What is stored of a recovery code: SHA-256 over its salt and its normalised form."""
    return hashlib.sha256(salt + normalise_recovery_code(code).encode("ascii", "replace")).digest()


# --- lock-out after failed sign-ins --------------------------------------------------------

FREE_FAILURES = 5  # failures before any delay
FIRST_DELAY_MS = 30_000
MAX_DELAY_MS = 15 * 60_000


def locked_until_after(failures: int, now_ms: int) -> int:
    """When a user may try again after their `failures`-th failure in a row: at once for the
    first FREE_FAILURES - 1, then 30 s, doubling each failure, at most 15 minutes."""
    if failures < FREE_FAILURES:
        return 0
    delay = FIRST_DELAY_MS << min(failures - FREE_FAILURES, 16)
    return now_ms + min(delay, MAX_DELAY_MS)
