"""Files sealed under a code a person types from a screen or a slip of paper - enrollment files
and recovery kits: a CBOR map of the file's format, the Argon2id salt and cost, and the contents
sealed under the code (XSalsa20-Poly1305). Each kind checks its own format and says its own
errors; the envelope, its cost bound and the code's grouping are one. Pure (blocking: Argon2id)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from appliance import cbor, crypto
from appliance.errors import InvalidInput

MAX_OPSLIMIT = 16  # a file from elsewhere must not make its reader derive for hours
MAX_MEMLIMIT = 1 << 30


def seal(file_format: str, contents: bytes, code: str, salt: bytes, nonce: bytes, kdf: crypto.KdfParams) -> bytes:
    """The file: `contents` sealed under `code` (as normalised by its kind)."""
    sealed = crypto.seal_with_passphrase(code, contents, salt, nonce, kdf)
    return cbor.encode({"format": file_format, "salt": salt, "opslimit": kdf.opslimit, "memlimit": kdf.memlimit, "sealed": sealed})


def unseal(outer: Mapping[str, Any], code: str) -> bytes:
    """The contents of a decoded file whose format the caller checked. Raises WrongPassphrase
    (a wrong code, or the file was altered), InvalidInput (an unreasonable key-derivation cost),
    or KeyError, TypeError or ValueError (a damaged file)."""
    params = crypto.KdfParams(int(outer["opslimit"]), int(outer["memlimit"]))
    if params.memlimit > MAX_MEMLIMIT or params.opslimit > MAX_OPSLIMIT:
        raise InvalidInput("unreasonable key-derivation cost")
    return crypto.open_with_passphrase(code, outer["sealed"], outer["salt"], params)


def shown(code: str) -> str:
    """A code as it is shown: groups of four joined by dashes."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))
