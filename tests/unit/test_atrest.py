"""The key file codec and the keys derived from the data key (appliance/atrest.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import atrest, cbor, crypto
from appliance.errors import KeyFileInvalid

salts = st.binary(min_size=crypto.SALT_BYTES, max_size=crypto.SALT_BYTES)
sealed_keys = st.binary(min_size=atrest.SEALED_KEY_BYTES, max_size=atrest.SEALED_KEY_BYTES)
costs = st.integers(min_value=1, max_value=(1 << 40) - 1)
key_files = st.builds(atrest.KeyFile, salts, st.builds(crypto.KdfParams, costs, costs), sealed_keys)


@given(key_files)
def test_a_key_file_decodes_to_what_was_encoded(key_file: atrest.KeyFile) -> None:
    data = atrest.encode_key_file(key_file)
    assert data.startswith(b"rallypoint-node-key/1\n")
    assert atrest.decode_key_file(data) == key_file


@given(key_files, st.data())
def test_a_damaged_key_file_is_refused_never_misread(key_file: atrest.KeyFile, data: st.DataObject) -> None:
    encoded = bytearray(atrest.encode_key_file(key_file))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(KeyFileInvalid):
        atrest.decode_key_file(bytes(encoded[:cut]))
    index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        decoded = atrest.decode_key_file(bytes(encoded))
    except KeyFileInvalid:
        return
    assert decoded != key_file  # a flipped byte that still decodes (in the salt or sealed key) is another file


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_or_a_valid_key_file(data: bytes) -> None:
    try:
        decoded = atrest.decode_key_file(data)
    except KeyFileInvalid:
        return
    assert atrest.encode_key_file(decoded) == data


GOOD = atrest.KeyFile(bytes(range(16)), crypto.KdfParams(2, 67108864), bytes(range(72)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a node key file"),
        (b"SQLite format 3\x00", "not a node key file"),
        (b"rallypoint-node-key/2\n" + b"\xa0", "newer format"),
        (atrest.MAGIC + cbor.encode({"v": 2, "salt": GOOD.salt, "ops": 2, "mem": 67108864, "sealed": GOOD.sealed}), "unknown version"),
        (atrest.MAGIC + cbor.encode({"v": 1, "salt": b"short", "ops": 2, "mem": 67108864, "sealed": GOOD.sealed}), "bad salt"),
        (atrest.MAGIC + cbor.encode({"v": 1, "salt": GOOD.salt, "ops": 0, "mem": 67108864, "sealed": GOOD.sealed}), "bad KDF cost"),
        (atrest.MAGIC + cbor.encode({"v": 1, "salt": GOOD.salt, "ops": -3, "mem": 67108864, "sealed": GOOD.sealed}), "bad KDF cost"),
        (atrest.MAGIC + cbor.encode({"v": 1, "salt": GOOD.salt, "ops": 2, "mem": 67108864, "sealed": GOOD.sealed[:-1]}), "bad sealed key"),
        (atrest.MAGIC + cbor.encode({"v": 1, "salt": GOOD.salt, "ops": 2, "mem": 67108864}), "unexpected fields"),
        (atrest.MAGIC + cbor.encode([1, 2]), "unexpected fields"),
        (atrest.MAGIC + b"\xff\xff", "damaged"),
        (atrest.encode_key_file(GOOD) + b"\n", "damaged"),
        (atrest.MAGIC + bytes(5000), "too large"),
    ],
)
def test_bad_key_files_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(KeyFileInvalid, match=reason):
        atrest.decode_key_file(data, "node.key")


def test_the_database_key_is_a_domain_separated_hash_of_the_data_key() -> None:
    data_key = bytes(range(32))
    db_key = atrest.database_key(data_key)
    assert len(db_key) == 32 and db_key != data_key
    assert db_key == hashlib.blake2b(b"database", key=data_key, digest_size=32, person=b"rp-sqlcipher-v1").digest()
    assert db_key != hashlib.blake2b(b"database", key=data_key, digest_size=32).digest()  # the personalisation counts
    assert atrest.database_key(bytes(31) + b"\x01") != atrest.database_key(bytes(32))
    with pytest.raises(ValueError):
        atrest.database_key(bytes(16))


def test_the_key_pragma_gives_sqlcipher_the_raw_key() -> None:
    assert atrest.key_pragma(bytes([0xAB]) * 32) == "PRAGMA key = \"x'" + "ab" * 32 + "'\""
    with pytest.raises(ValueError):
        atrest.key_pragma(bytes(31))


@given(st.binary(min_size=32, max_size=32))
def test_a_data_key_file_round_trips(data_key: bytes) -> None:
    assert atrest.decode_data_key_file(atrest.encode_data_key_file(data_key), "relay.key") == data_key


@pytest.mark.parametrize("data", [b"", b"ab" * 31, b"zz" * 32, bytes(33), b"ab" * 33])
def test_a_data_key_file_without_a_key_is_refused(data: bytes) -> None:
    with pytest.raises(KeyFileInvalid, match="does not hold a data key"):
        atrest.decode_data_key_file(data, "relay.key")


def test_a_plain_database_is_told_by_its_header() -> None:
    assert atrest.is_plaintext_database(b"SQLite format 3\x00" + bytes(84))
    assert not atrest.is_plaintext_database(bytes(range(16)))
