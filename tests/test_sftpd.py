"""SftpDrop against the demo's in-process SFTP server."""

from __future__ import annotations

import logging
import re

import paramiko
import pytest

from bridge.edges.sftp import SftpDrop, SftpEndpoint
from bridge.errors import FileExistsInDrop, FixTheSetup, HostKeyMismatch, SftpAuthError
from bridge.sandbox.sftpd import LocalSftpServer


@pytest.fixture
def client_key(sshd):
    return sshd.client_key  # an ed25519 key file made for the OpenSSH fixture


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    return root


def endpoint(server, tmp_path, **auth):
    known_hosts = tmp_path / "known_hosts"
    server.write_known_hosts(known_hosts)
    return SftpEndpoint("127.0.0.1", server.port, "warehouse", known_hosts, timeout=5.0, **auth)


def deliver_and_read(drop):
    drop.makedirs("/orders/in")
    drop.put_bytes(b"order 1", "/orders/in/.o1.tmp")
    drop.rename("/orders/in/.o1.tmp", "/orders/in/o1.csv")
    assert [f.name for f in drop.listdir("orders/in")] == ["o1.csv"]  # relative = from "/"
    assert drop.read_bytes("/orders/in/o1.csv") == b"order 1"


def test_key_login(served, tmp_path, client_key):
    with LocalSftpServer(served, authorized_key=client_key.with_suffix(".pub")) as server:
        with SftpDrop(endpoint(server, tmp_path, private_key=client_key)) as drop:
            assert drop.check() == server.host_key.fingerprint
            deliver_and_read(drop)
            assert drop._fsync is False  # paramiko's server lacks fsync@openssh.com: asked once
    assert (served / "orders/in/o1.csv").read_bytes() == b"order 1"


def test_password_login_and_no_password_in_logs(served, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with LocalSftpServer(served, password="s3cret-demo") as server:
        with SftpDrop(endpoint(server, tmp_path, password="s3cret-demo")) as drop:
            deliver_and_read(drop)
    assert not [r for r in caplog.records if "s3cret-demo" in r.getMessage()]


def test_wrong_password(served, tmp_path):
    with LocalSftpServer(served, password="right") as server:
        with pytest.raises(SftpAuthError, match="'warehouse' by password") as caught:
            SftpDrop(endpoint(server, tmp_path, password="wrong"), sleep=pytest.fail).check()
    assert "wrong" not in str(caught.value).replace("'warehouse'", "")


def test_wrong_key(served, tmp_path, client_key):
    other = paramiko.RSAKey.generate(2048)
    with LocalSftpServer(served, authorized_key=other) as server:
        with pytest.raises(SftpAuthError, match="by key"):
            SftpDrop(endpoint(server, tmp_path, private_key=client_key), sleep=pytest.fail).check()


def test_jail_escape_refused(served, tmp_path):
    (tmp_path / "outside.txt").write_bytes(b"not yours")
    (served / "link").symlink_to(tmp_path)
    with LocalSftpServer(served, password="pw") as server:
        with SftpDrop(endpoint(server, tmp_path, password="pw")) as drop:
            for path in ("../outside.txt", "/../outside.txt", "/a/../../outside.txt",
                         "/link/outside.txt"):
                with pytest.raises(FixTheSetup, match="permission denied"):
                    drop.read_bytes(path)
            with pytest.raises(FixTheSetup, match="permission denied"):
                drop.put_bytes(b"x", "../planted.txt")
            with pytest.raises(FixTheSetup, match="permission denied"):
                drop.listdir("..")
    assert not (tmp_path / "planted.txt").exists()


def test_rename_never_overwrites_but_posix_rename_does(served, tmp_path):
    with LocalSftpServer(served, password="pw") as server:
        with SftpDrop(endpoint(server, tmp_path, password="pw")) as drop:
            drop.put_bytes(b"old", "/a.csv")
            drop.put_bytes(b"new", "/a.tmp")
            with pytest.raises(FileExistsInDrop):
                drop.rename("/a.tmp", "/a.csv")
            assert drop.read_bytes("/a.csv") == b"old"
            drop._sftp.posix_rename("/a.tmp", "/a.csv")
            assert drop.read_bytes("/a.csv") == b"new"


def test_host_key_saved_and_reused(served, tmp_path):
    key_file = tmp_path / "host_key"
    with LocalSftpServer(served, password="pw", host_key=key_file) as first:
        line = first.known_hosts_line()
    assert key_file.stat().st_mode & 0o777 == 0o600
    with LocalSftpServer(served, password="pw", host_key=key_file, port=0) as second:
        assert second.known_hosts_line().split()[1:] == line.split()[1:]
        assert line.startswith("[127.0.0.1]:") and line.split()[1] == "ssh-ed25519"


def test_unknown_server_key(served, tmp_path):
    with LocalSftpServer(served, password="pw") as server:
        ep = endpoint(server, tmp_path, password="pw")
        ep.known_hosts.write_text("")
        with pytest.raises(HostKeyMismatch, match=re.escape(server.host_key.fingerprint)):
            SftpDrop(ep).check()
