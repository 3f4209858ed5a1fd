"""An SFTP server in this process, serving one folder, for the demo (no system sshd needed).

    with LocalSftpServer(root, password="demo") as server:
        server.write_known_hosts(folder / "known_hosts")
        ... SftpEndpoint("127.0.0.1", server.port, "demo", folder / "known_hosts", password="demo")

The client sees `root` as "/"; no path leads outside it ("../" above the root is refused).
Plain rename never replaces a file (as SFTPv3 says); posix-rename@openssh.com does.
Any user name is accepted; the key or the password decides.
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import os
import posixpath
import socket
import threading
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.sftp import (
    SFTP_FAILURE,
    SFTP_OK,
    SFTP_OP_UNSUPPORTED,
    SFTP_PERMISSION_DENIED,
)

from bridge.edges.folders import jailed_parts

log = logging.getLogger("bridge.sandbox.sftpd")


class LocalSftpServer:
    def __init__(
        self,
        root: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        host_key: Path | None = None,
        authorized_key: paramiko.PKey | Path | None = None,
        password: str | None = None,
    ):
        """`host_key`: a private key file, created (ed25519) if missing; None: a key for this run
        only. `authorized_key`: a key, or a file of public keys (authorized_keys format) or a
        private key file."""
        if authorized_key is None and password is None:
            raise ValueError("LocalSftpServer needs an authorized_key, a password or both")
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.host_key = _host_key(host_key)
        self._keys = _authorized_keys(authorized_key)
        self._password = password
        self._listener: socket.socket | None = None
        self._transports: list[paramiko.Transport] = []
        self._lock = threading.Lock()

    def start(self) -> LocalSftpServer:
        listener = socket.create_server((self.host, self.port))
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, name=f"sftpd:{self.port}", daemon=True).start()
        log.info("sftpd listening host=%s port=%d root=%s", self.host, self.port, self.root)
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close alone does not
            except OSError:
                pass
            listener.close()
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()

    def __enter__(self) -> LocalSftpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def known_hosts_line(self) -> str:
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {self.host_key.get_name()} {self.host_key.get_base64()}"

    def write_known_hosts(self, path: Path) -> None:
        Path(path).write_text(self.known_hosts_line() + "\n")

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", SFTPServer, _JailedSftp, root=self.root)
        with self._lock:
            if self._listener is None:
                transport.close()
                return
            self._transports.append(transport)
        try:
            transport.start_server(server=_Auth(self._keys, self._password))
        except (paramiko.SSHException, EOFError, OSError) as e:
            log.info("sftpd connection refused: %s", e)
            transport.close()


class _Auth(paramiko.ServerInterface):
    def __init__(self, keys: list[paramiko.PKey], password: str | None):
        self.keys, self.password = keys, password

    def get_allowed_auths(self, username: str) -> str:
        return ",".join(m for m, on in (("publickey", self.keys), ("password", self.password))
                        if on)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if any(key == known for known in self.keys):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        if self.password is not None and hmac.compare_digest(
            password.encode(), self.password.encode()
        ):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_subsystem_request(self, channel, name: str) -> bool:
        return name == "sftp" and super().check_channel_subsystem_request(channel, name)


class _Escape(Exception):
    """A path that climbs above the served root."""


class _JailedSftp(SFTPServerInterface):
    """Serves `root` as "/". Returns SFTP status codes; never raises into paramiko."""

    def __init__(self, server, *args, root: Path, **kwargs):
        super().__init__(server, *args, **kwargs)
        self.root = root

    def _local(self, path: str) -> str:
        try:
            local = os.path.join(self.root, *jailed_parts(path))
        except ValueError:
            raise _Escape(path) from None
        real = os.path.realpath(local)
        if real != str(self.root) and not real.startswith(str(self.root) + os.sep):
            raise _Escape(path)  # a symbolic link pointing outside
        return local

    def canonicalize(self, path: str) -> str:
        return posixpath.normpath(posixpath.join("/", path))

    def list_folder(self, path: str):
        def listing():
            folder = self._local(path)
            entries = []
            for name in sorted(os.listdir(folder)):
                try:
                    entries.append(_attrs(os.lstat(os.path.join(folder, name)), name))
                except FileNotFoundError:
                    continue  # removed while listing
            return entries

        return _status(listing)

    def stat(self, path: str):
        return _status(lambda: _attrs(os.stat(self._local(path))))

    def lstat(self, path: str):
        return _status(lambda: _attrs(os.lstat(self._local(path))))

    def open(self, path: str, flags: int, attr):
        def open_file():
            mode = getattr(attr, "st_mode", None) or 0o644
            fd = os.open(self._local(path), flags | getattr(os, "O_BINARY", 0), mode & 0o777)
            return _Handle(fd, flags)

        return _status(open_file)

    def remove(self, path: str) -> int:
        return _status(lambda: os.unlink(self._local(path)), SFTP_OK)

    def rename(self, oldpath: str, newpath: str) -> int:
        def rename():
            src, dst = self._local(oldpath), self._local(newpath)
            if os.path.isdir(src):
                if os.path.lexists(dst):
                    raise FileExistsError(dst)
                os.rename(src, dst)
            else:
                os.link(src, dst)  # never replaces dst
                os.unlink(src)

        return _status(rename, SFTP_OK)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return _status(lambda: os.replace(self._local(oldpath), self._local(newpath)), SFTP_OK)

    def mkdir(self, path: str, attr) -> int:
        return _status(lambda: os.mkdir(self._local(path)), SFTP_OK)

    def rmdir(self, path: str) -> int:
        return _status(lambda: os.rmdir(self._local(path)), SFTP_OK)

    def chattr(self, path: str, attr) -> int:
        return _status(lambda: SFTPServer.set_file_attr(self._local(path), attr), SFTP_OK)

    def symlink(self, target_path: str, path: str) -> int:
        return SFTP_OP_UNSUPPORTED

    def readlink(self, path: str):
        return SFTP_OP_UNSUPPORTED


class _Handle(SFTPHandle):
    def __init__(self, fd: int, flags: int):
        super().__init__(flags)
        append = flags & os.O_APPEND
        if flags & os.O_WRONLY:
            mode = "ab" if append else "wb"
        elif flags & os.O_RDWR:
            mode = "a+b" if append else "r+b"
        else:
            mode = "rb"
        f = os.fdopen(fd, mode)
        self.readfile = f if mode != "wb" and mode != "ab" else None
        self.writefile = f if mode != "rb" else None
        self._file = f

    def stat(self):
        return _status(lambda: _attrs(os.fstat(self._file.fileno())))

    def chattr(self, attr) -> int:
        return _status(lambda: SFTPServer.set_file_attr(self._file.name, attr), SFTP_OK)


def _status(action, success=None):
    """Run `action`; an OS error becomes the SFTP status code paramiko sends back."""
    try:
        result = action()
    except _Escape:
        return SFTP_PERMISSION_DENIED
    except OSError as e:
        return SFTPServer.convert_errno(e.errno) if e.errno else SFTP_FAILURE
    return result if success is None else success


def _attrs(st: os.stat_result, name: str | None = None) -> SFTPAttributes:
    attrs = SFTPAttributes.from_stat(st)
    if name is not None:
        attrs.filename = name
    return attrs


def _host_key(path: Path | None) -> paramiko.PKey:
    if path is not None and Path(path).exists():
        return paramiko.PKey.from_path(path)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode()))


def _authorized_keys(key: paramiko.PKey | Path | None) -> list[paramiko.PKey]:
    if key is None:
        return []
    if isinstance(key, paramiko.PKey):
        return [key]
    text = Path(key).read_text()
    if "PRIVATE KEY" in text:
        return [paramiko.PKey.from_path(key)]
    keys = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#"):
            keys.append(paramiko.PKey.from_type_string(fields[0], base64.b64decode(fields[1])))
    return keys
