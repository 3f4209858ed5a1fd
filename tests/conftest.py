"""Shared fixtures. `sshd` is one private OpenSSH server for the whole test session."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.edges.sftp import SftpEndpoint
from sshd import OpenSshd, SshdMissing

os.environ["NO_PROXY"] = "127.0.0.1,localhost"  # httpx tests talk to servers on loopback


@dataclass
class Sshd:
    server: OpenSshd
    endpoint: SftpEndpoint  # key login as the current user
    root: Path  # remote files live under here; one subfolder per test (`sftp_root`)

    port = property(lambda self: self.server.port)
    host_key_fingerprint = property(lambda self: self.server.host_key_fingerprint)
    client_key = property(lambda self: self.server.client_key)
    known_hosts = property(lambda self: self.server.known_hosts)


@pytest.fixture(scope="session")
def sshd():
    try:
        server = OpenSshd()
    except SshdMissing as e:
        pytest.fail(str(e), pytrace=False)
    with server:
        endpoint = SftpEndpoint("127.0.0.1", server.port, server.user, server.known_hosts,
                                private_key=server.client_key, timeout=5.0)
        yield Sshd(server, endpoint, server.dir / "files")


@pytest.fixture
def sftp_root(sshd) -> Path:
    """A fresh, empty folder on the sshd server (same machine) for this test's files."""
    sshd.root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=sshd.root))


@pytest.fixture
def sandbox():
    """The SP-API sandbox over HTTP with the demo seed; the library's token cache cleared."""
    from harness import SEED

    import sp_api.auth.access_token_client as token_cache
    from bridge.sandbox.spapi import SpApiSandbox, load_seed

    token_cache.cache.clear()
    with SpApiSandbox(load_seed(SEED)) as server:
        yield server
