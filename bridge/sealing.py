"""Buyer data at rest is sealed: the ledger's order payloads and the spool files.

Amazon's Data Protection Policy asks for PII to be encrypted where it is stored. The key is the
secret BRIDGE_STATE_KEY (32 random bytes, URL-safe base64: `fbm-bridge keygen` prints one).
Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`, which paramiko already needs)
authenticates as well as encrypts, so a wrong key or a tampered file is detected, never
silently read as garbage.
"""

from __future__ import annotations

import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bridge.errors import FixTheSetup

# The ledger stores this text sealed with its key (`meta.key_check`), so a key can be checked
# before anything is written with it, even in a ledger that holds no order yet.
CHECK_TEXT = b"fbm-bridge state key check v1"


# A Fernet token: URL-safe base64 of a version byte 0x80 and a timestamp (so "gAAAAA...").
_TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_-]+={0,2}\s*")


def looks_sealed(data: bytes) -> bool:
    """Whether `data` has the form of sealed data (with some key), as opposed to a plain file."""
    return _TOKEN.fullmatch(data) is not None


def new_key() -> str:
    return Fernet.generate_key().decode("ascii")


def is_key(text: str) -> bool:
    try:
        Fernet(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    return True


class Sealer:
    def __init__(self, key: str):
        self._fernet = Fernet(key.encode("ascii"))

    def seal(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def try_open(self, token: bytes) -> bytes | None:
        """The data, or None if this key does not open the token (another key, or damaged)."""
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            return None

    def opens(self, token: bytes) -> bool:
        return self.try_open(token) is not None

    def check_value(self) -> str:
        return self.seal(CHECK_TEXT).decode("ascii")

    def opens_check(self, check_value: str) -> bool:
        return self.try_open(check_value.encode("ascii")) == CHECK_TEXT

    def open(self, token: bytes, what: str) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise FixTheSetup(
                f"{what} cannot be opened with BRIDGE_STATE_KEY: the key was changed or the data"
                " altered; restore the key the state was written with"
            ) from None


class Resealer:
    """During a key rotation: opens what either key sealed, seals with the new one."""

    def __init__(self, old: Sealer, new: Sealer):
        self.old, self.new = old, new
        self._both = MultiFernet([new._fernet, old._fernet])

    def reseal(self, token: bytes) -> bytes | None:
        """`token` sealed with the new key, or None if neither key opens it."""
        if self.new.opens(token):
            return token  # already done (a rotation resumed after a crash)
        try:
            return self._both.rotate(token)
        except InvalidToken:
            return None
