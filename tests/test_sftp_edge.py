"""SftpDrop against a real OpenSSH server: host keys, logins, outages and session reuse."""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import threading

import pytest

from bridge.edges.sftp import SftpDrop, SftpEndpoint
from bridge.errors import HostKeyMismatch, RetryLater, SftpAuthError, SftpUnavailable
from sshd import OpenSshd, free_port


def keygen(path, kind="ed25519"):
    bits = ["-b", "2048"] if kind == "rsa" else []  # 3072 (the default) takes a second
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-f", str(path)], check=True)
    return path


def fingerprint(pub):
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


@pytest.fixture
def own_sshd(tmp_path):
    """A server of the test's own, free to be killed and restarted."""
    with OpenSshd(tmp_path / "sshd") as server:
        yield server


def endpoint_of(server: OpenSshd) -> SftpEndpoint:
    return SftpEndpoint("127.0.0.1", server.port, server.user, server.known_hosts,
                        private_key=server.client_key, timeout=5.0)


def test_check_returns_server_fingerprint_and_a_process_logs_its_login_to_a_server_once(sshd, caplog, monkeypatch):
    from bridge.edges import sftp

    monkeypatch.setattr(sftp, "_LOGGED_IN", set())  # a new process
    caplog.set_level(logging.INFO, logger="bridge.sftp")
    with SftpDrop(sshd.endpoint) as drop:
        assert drop.check() == sshd.host_key_fingerprint
        drop.check()
    with SftpDrop(sshd.endpoint) as again:  # the next poll: a new login, at DEBUG
        again.check()
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.sftp"]
    assert len(lines) == 1
    assert f"port={sshd.port}" in lines[0] and sshd.host_key_fingerprint in lines[0]


@pytest.mark.parametrize("known_hosts", ["empty", "missing"])
def test_unknown_host_key_names_the_fix(sshd, tmp_path, known_hosts):
    path = tmp_path / "known_hosts"
    if known_hosts == "empty":
        path.write_text("")
    endpoint = dataclasses.replace(sshd.endpoint, known_hosts=path)
    with pytest.raises(HostKeyMismatch) as caught:
        SftpDrop(endpoint, attempts=3, sleep=pytest.fail).check()
    message = str(caught.value)
    assert f"host [127.0.0.1]:{sshd.port} is not in known_hosts {path}" in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in message
    assert sshd.host_key_fingerprint in message
    assert not path.exists() or path.read_text() == ""  # never added on its own


def test_changed_host_key_may_be_interception(sshd, tmp_path):
    other = keygen(tmp_path / "other")
    kind, blob = (tmp_path / "other.pub").read_text().split()[:2]
    path = tmp_path / "known_hosts"
    path.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    endpoint = dataclasses.replace(sshd.endpoint, known_hosts=path)
    with pytest.raises(HostKeyMismatch, match="interception") as caught:
        SftpDrop(endpoint, sleep=pytest.fail).check()
    assert fingerprint(f"{other}.pub") in str(caught.value)  # expected
    assert sshd.host_key_fingerprint in str(caught.value)  # offered


def test_wrong_client_key_is_an_auth_error(sshd, tmp_path):
    endpoint = dataclasses.replace(sshd.endpoint, private_key=keygen(tmp_path / "stranger"))
    with pytest.raises(SftpAuthError) as caught:
        SftpDrop(endpoint, sleep=pytest.fail).check()
    message = str(caught.value)
    assert sshd.server.user in message and f"[127.0.0.1]:{sshd.port}" in message
    assert "stranger" in message  # the method: which key


def test_password_never_appears_in_errors_or_logs(sshd, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "hunter2-very-secret"
    endpoint = dataclasses.replace(sshd.endpoint, private_key=None, password=secret)
    with pytest.raises(SftpAuthError, match="by password") as caught:
        SftpDrop(endpoint, sleep=pytest.fail).check()  # this server takes keys only
    assert secret not in str(caught.value) and secret not in repr(endpoint)
    assert caplog.records
    assert not [r for r in caplog.records if secret in r.getMessage()]


@pytest.mark.parametrize("kind", ["rsa", "ecdsa", "ed25519"])
def test_key_types(own_sshd, tmp_path, kind):
    key = keygen(tmp_path / f"id_{kind}", kind)
    with open(own_sshd.dir / "authorized_keys", "a") as f:
        f.write((tmp_path / f"id_{kind}.pub").read_text())
    endpoint = dataclasses.replace(endpoint_of(own_sshd), private_key=key)
    with SftpDrop(endpoint) as drop:
        assert drop.check() == own_sshd.host_key_fingerprint


def test_nothing_listening_is_unavailable_after_attempts():
    waits = []
    endpoint = SftpEndpoint("127.0.0.1", free_port(), "nobody", "/nonexistent", password="x",
                            timeout=2.0)
    drop = SftpDrop(endpoint, attempts=3, backoff=0.5, sleep=waits.append)
    with pytest.raises(SftpUnavailable, match="3 attempts"):
        drop.exists("/tmp")
    assert waits == [0.5, 1.0]
    assert drop.connects == 0
    assert isinstance(SftpUnavailable("x"), RetryLater)


def test_not_an_ssh_server_is_unavailable():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def hang_up():
        for _ in range(2):
            conn, _ = listener.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    endpoint = SftpEndpoint("127.0.0.1", port, "nobody", "/nonexistent", password="x",
                            timeout=2.0)
    with pytest.raises(SftpUnavailable):
        SftpDrop(endpoint, attempts=2, sleep=lambda s: None).check()
    listener.close()


def test_reconnects_after_server_restart(own_sshd, tmp_path):
    folder = str(tmp_path)
    with SftpDrop(endpoint_of(own_sshd), sleep=lambda s: None) as drop:
        drop.put_bytes(b"before", f"{folder}/a")
        own_sshd.restart()  # kills the session's server process too
        drop.put_bytes(b"after", f"{folder}/b")
        assert [f.name for f in drop.listdir(folder)] == ["a", "b"]
        assert drop.connects == 2


def test_server_gone_mid_session(own_sshd, tmp_path):
    folder = str(tmp_path)
    waits = []
    with SftpDrop(endpoint_of(own_sshd), attempts=2, sleep=waits.append) as drop:
        drop.put_bytes(b"x", f"{folder}/a.tmp")
        own_sshd.stop()
        with pytest.raises(SftpUnavailable):
            drop.listdir(folder)
        with pytest.raises(SftpUnavailable):
            drop.rename(f"{folder}/a.tmp", f"{folder}/a")
        own_sshd.start()
        drop.rename(f"{folder}/a.tmp", f"{folder}/a")  # usable again once the server is back
    assert (tmp_path / "a").read_bytes() == b"x"


def test_one_session_for_many_operations(sshd, sftp_root):
    with SftpDrop(sshd.endpoint) as drop:
        for i in range(40):
            drop.put_bytes(b"%d" % i, f"{sftp_root}/.{i}.tmp")
            drop.rename(f"{sftp_root}/.{i}.tmp", f"{sftp_root}/{i:02}.csv")
        assert len(drop.listdir(str(sftp_root))) == 40
        assert drop.read_bytes(f"{sftp_root}/07.csv") == b"7"
        assert drop.connects == 1


def test_rename_is_not_repeated_when_the_connection_drops_during_it(sshd, sftp_root):
    with SftpDrop(sshd.endpoint, sleep=pytest.fail) as drop:
        drop.put_bytes(b"x", f"{sftp_root}/a.tmp")
        session = drop._sftp

        def drop_connection(src, dst):
            session.get_channel().get_transport().close()
            raise EOFError()

        session.rename = drop_connection
        with pytest.raises(SftpUnavailable, match="outcome is unknown"):
            drop.rename(f"{sftp_root}/a.tmp", f"{sftp_root}/a")
        assert drop.connects == 1


def test_silent_server_times_out_as_unavailable():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    endpoint = SftpEndpoint("127.0.0.1", listener.getsockname()[1], "nobody", "/nonexistent",
                            password="x", timeout=0.3)
    with pytest.raises(SftpUnavailable, match="2 attempts"):
        SftpDrop(endpoint, attempts=2, sleep=lambda s: None).check()
    listener.close()


# --- fsync@openssh.com: unsupported is skipped, a failed flush fails the put ---------------------


def fsync_answering(code: int, text: str):
    """The in-process server's SFTP handler, answering every fsync@openssh.com with `code`."""
    from paramiko import SFTPServer
    from paramiko.sftp import CMD_EXTENDED

    class Answering(SFTPServer):
        def _process(self, t, request_number, msg):
            if t == CMD_EXTENDED:
                at = msg.packet.tell()
                tag = msg.get_text()
                if tag == "fsync@openssh.com":
                    return self._send_status(request_number, code, text)
                msg.packet.seek(at)
            return super()._process(t, request_number, msg)

    return Answering


@pytest.fixture
def serve_fsync(tmp_path, monkeypatch):
    """start(code, text) -> (a drop on an in-process server whose fsync answers `code`, its root)."""
    import bridge.sandbox.sftpd as sftpd

    servers = []

    def start(code: int, text: str):
        monkeypatch.setattr(sftpd, "SFTPServer", fsync_answering(code, text))
        root = tmp_path / "root"
        root.mkdir()
        server = sftpd.LocalSftpServer(root, password="pw").start()
        servers.append(server)
        server.write_known_hosts(tmp_path / "known_hosts")
        endpoint = SftpEndpoint("127.0.0.1", server.port, "wh", tmp_path / "known_hosts",
                                password="pw", timeout=5.0)
        return SftpDrop(endpoint, attempts=1, sleep=pytest.fail), root

    yield start
    for server in servers:
        server.stop()


def test_a_failed_fsync_fails_the_put_and_is_asked_again_next_time(serve_fsync):
    from paramiko.sftp import SFTP_FAILURE

    from bridge.errors import FixTheSetup

    drop, root = serve_fsync(SFTP_FAILURE, "Failure")
    with drop:
        with pytest.raises(FixTheSetup, match="fsync@openssh.com failed: Failure"):
            drop.put_bytes(b"order 1", "/o1.csv.part")
        assert drop._fsync is True  # a failed flush is not a missing extension
        with pytest.raises(FixTheSetup, match="fsync@openssh.com failed"):
            drop.put_bytes(b"order 1", "/o1.csv.part")


@pytest.mark.parametrize("text", ["Operation unsupported", "no such extension", ""])
def test_fsync_unsupported_is_known_by_its_status_code_and_skipped_for_the_session(serve_fsync, text):
    from paramiko.sftp import SFTP_OP_UNSUPPORTED

    drop, root = serve_fsync(SFTP_OP_UNSUPPORTED, text)
    with drop:
        drop.put_bytes(b"order 1", "/o1.csv.part")
        assert drop._fsync is False
        drop.put_bytes(b"order 2", "/o2.csv.part")
    assert (root / "o1.csv.part").read_bytes() == b"order 1"
    assert (root / "o2.csv.part").read_bytes() == b"order 2"
