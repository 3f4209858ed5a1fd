"""Buyer data at rest is sealed: the ledger's order payloads and the spool files.

Amazon's Data Protection Policy asks for PII to be encrypted where it is stored. The key is the
secret BRIDGE_STATE_KEY (32 random bytes, URL-safe base64: `fbm-bridge keygen` prints one).
Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`, which paramiko already needs)
authenticates as well as encrypts, so a wrong key or a tampered file is detected, never
silently read as garbage.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from bridge.errors import FixTheSetup


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

    def open(self, token: bytes, what: str) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise FixTheSetup(
                f"{what} cannot be opened with BRIDGE_STATE_KEY: the key was changed or the data"
                " altered; restore the key the state was written with"
            ) from None
