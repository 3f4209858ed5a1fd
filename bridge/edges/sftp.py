"""A warehouse's SFTP server, through paramiko.

paramiko's exceptions stop here. What comes out:

- `HostKeyMismatch`  the server's key is not in our known_hosts file, or differs from it
- `SftpAuthError`    the server refused the login (or the private key cannot be used)
- `SftpUnavailable`  network trouble, after `attempts` tries where a retry is safe
- `RemotePathMissing`, `FileExistsInDrop`, `FixTheSetup`  the server refused an operation
- `TempNameBlocked`  a file cannot be uploaded: its name is taken by a link or a non-file

Host keys are checked against `SftpEndpoint.known_hosts` only, with paramiko's `RejectPolicy`:
never the user's ~/.ssh, never trust on first use.
"""

from __future__ import annotations

import errno
import logging
import socket
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_EXTENDED,
    CMD_FSTAT,
    CMD_OPEN,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_WRITE,
    SFTP_OP_UNSUPPORTED,
    int64,
)

from bridge.edges.folders import RemoteFile, blocked_message, each_file, unremovable_message
from bridge.errors import (
    FileExistsInDrop,
    FixTheSetup,
    HostKeyMismatch,
    RemotePathMissing,
    SftpAuthError,
    SftpUnavailable,
    TempNameBlocked,
)

__all__ = ["RemoteFile", "SftpDrop", "SftpEndpoint"]

log = logging.getLogger("bridge.sftp")
T = TypeVar("T")

_NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)
_CHUNK = 32768  # bytes per SFTP write request, as paramiko's SFTPFile
_BURST = 32  # write requests sent together before reading replies


@dataclass(frozen=True)
class SftpEndpoint:
    """How to reach and log in to one SFTP server. Exactly one of `private_key`, `password`."""

    host: str
    port: int
    username: str
    known_hosts: Path
    private_key: Path | None = None
    password: str | None = None
    fsync: bool = True  # ask the server to flush each file to disk before it is renamed into place
    timeout: float = 20.0
    passphrase: str | None = None  # of an encrypted private key (never shown)

    @property
    def address(self) -> str:
        """The host as OpenSSH writes it in known_hosts: `[host]:port` unless port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __repr__(self) -> str:  # never show the password
        auth = f"private_key={str(self.private_key)!r}" if self.private_key else "password=***"
        return f"SftpEndpoint({self.username}@{self.address}, {auth})"


class SftpDrop:
    """One warehouse's SFTP server. One session, opened lazily and reused for the run;
    reconnects with backoff.

    Operations that are safe to repeat (connect, stat, list, read, mkdir, and `put_bytes`, which
    writes the whole file anew) are retried `attempts` times, waiting `backoff`, then twice that, ...
    `rename` and `remove` are sent once: if the connection drops while one is in flight its
    outcome is unknown, so `SftpUnavailable` is raised and the next run looks again.
    """

    def __init__(
        self,
        endpoint: SftpEndpoint,
        *,
        attempts: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if (endpoint.private_key is None) == (endpoint.password is None):
            raise FixTheSetup(f"{endpoint!r}: give exactly one of private_key and password")
        self.endpoint = endpoint
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.sleep = sleep
        self.connects = 0  # sessions opened so far, for tests and the run summary
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._fsync = endpoint.fsync  # and until the server says it lacks fsync@openssh.com

    def __enter__(self) -> SftpDrop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        client, self._client, self._sftp = self._client, None, None
        if client is not None:
            client.close()

    # -- the drop contract ---------------------------------------------------------------------

    def check(self) -> str:
        """Connect and log in; return the server's host key fingerprint (`SHA256:...`)."""
        self._run("check", lambda sftp: None)
        assert self._client is not None
        return self._client.get_transport().get_remote_server_key().fingerprint

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        self._run(f"put {remote_path}", lambda sftp: self._put(sftp, data, remote_path),
                  what="folder of")

    def rename(self, src: str, dst: str) -> None:
        def rename(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.rename(src, dst)  # SFTPv3 rename never replaces an existing file
            except OSError as e:
                if not self._connected():
                    raise
                if _stat_or_none(sftp, dst) is not None:
                    raise FileExistsInDrop(self._exists_message(dst)) from None
                if _stat_or_none(sftp, src) is None:
                    raise RemotePathMissing(f"{src} does not exist on {self._where()}") from None
                raise self._refused(e, f"rename {src} to {dst}") from None

        self._run(f"rename {src}", rename, retry=False)

    def put_files(self, files):
        return each_file(self.put_bytes, files)

    def rename_files(self, pairs):
        return each_file(self.rename, pairs)

    def exists(self, path: str) -> bool:
        return self._run(f"stat {path}", lambda sftp: _stat_or_none(sftp, path) is not None)

    def listdir(self, folder: str) -> list[RemoteFile]:
        def listdir(sftp: paramiko.SFTPClient) -> list[RemoteFile]:
            files = [
                RemoteFile(a.filename, a.st_size or 0, float(a.st_mtime or 0))
                for a in sftp.listdir_attr(folder)
                if a.st_mode is not None and stat.S_ISREG(a.st_mode)
            ]
            return sorted(files, key=lambda f: f.name)

        return self._run(f"list {folder}", listdir, what="folder")

    def read_bytes(self, path: str) -> bytes:
        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as f:
                size = f.stat().st_size
                f.prefetch(size)
                return f.read(size)

        return self._run(f"read {path}", read)

    def remove(self, path: str) -> None:
        self._run(f"remove {path}", lambda sftp: sftp.remove(path), retry=False)

    def read_into(self, path: str, stream) -> int:
        """Copy `path` into the binary `stream` (rewound and truncated on each try), without
        holding the whole file in memory; returns the bytes copied."""
        def read(sftp: paramiko.SFTPClient) -> int:
            stream.seek(0)
            stream.truncate()
            return sftp.getfo(path, stream, prefetch=True)

        return self._run(f"read {path}", read)

    def makedirs(self, folder: str) -> None:
        def makedirs(sftp: paramiko.SFTPClient, path: str = folder) -> None:
            attrs = _stat_or_none(sftp, path)
            if attrs is not None:
                if not stat.S_ISDIR(attrs.st_mode or 0):
                    raise FixTheSetup(f"{path} on {self._where()} is a file, not a folder")
                return
            parent = path.rstrip("/").rpartition("/")[0]
            if parent:
                makedirs(sftp, parent)
            try:
                sftp.mkdir(path)
            except OSError:
                attrs = _stat_or_none(sftp, path)  # someone else made it meanwhile?
                if attrs is None or not stat.S_ISDIR(attrs.st_mode or 0):
                    raise

        self._run(f"mkdir {folder}", makedirs)

    # -- writing: the requests SFTPFile would send, sent together --------------------------------

    def _put(self, sftp: paramiko.SFTPClient, data: bytes, path: str) -> None:
        """Open, then send the writes, the fsync, the fstat and the close together; wait once.

        paramiko's SFTPFile sends each request in its own SSH packet and waits for the fsync,
        the stat and the close one after the other; for a small file those round trips are most
        of the time (see bench/sftp_delivery.py). The requests are the same: SFTP v3 plus
        OpenSSH's fsync@openssh.com. A large file goes in bursts of `_BURST` writes.
        """
        handle = self._create(sftp, path)
        tail = [(CMD_FSTAT, handle), (CMD_CLOSE, handle)]
        if self._fsync:
            tail.insert(0, (CMD_EXTENDED, "fsync@openssh.com", handle))
        bursts = [
            [(CMD_WRITE, handle, int64(at), data[at:at + _CHUNK])
             for at in range(start, min(len(data), start + _CHUNK * _BURST), _CHUNK)]
            for start in range(0, len(data), _CHUNK * _BURST)
        ] or [[]]
        pending: list[int] = []
        errors: list[OSError] = []
        for n, writes in enumerate(bursts):
            if len(pending) >= _BURST:  # keep the replies from filling the channel window
                self._collect(sftp, pending[:_BURST], errors)
                del pending[:_BURST]
            pending += _send_batch(sftp, writes + (tail if n == len(bursts) - 1 else []))
        self._collect(sftp, pending[:-len(tail)], errors)
        size = None
        for request, num in zip(tail, pending[-len(tail):]):
            reply = self._collect(sftp, [num], errors, fsync=request[0] == CMD_EXTENDED)
            if request[0] == CMD_FSTAT and reply is not None and reply[0] == CMD_ATTRS:
                size = paramiko.SFTPAttributes._from_msg(reply[1]).st_size
        if errors:
            raise errors[0]
        if size != len(data):
            raise _ShortWrite(f"{path}: wrote {len(data)} bytes, server has {size}")

    def _create(self, sftp: paramiko.SFTPClient, path: str) -> bytes:
        """A handle to a new, empty file `path`: opened with CREATE|EXCL, which OpenSSH's
        sftp-server passes on as O_CREAT|O_EXCL, so an existing name (a symbolic link too, even
        a dangling one) is refused, never followed. A regular file there is a previous attempt's
        (a put cut short): removed, then created again; anything else is left alone."""
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
        try:
            return sftp._request(CMD_OPEN, path, flags, paramiko.SFTPAttributes())[1].get_binary()
        except OSError as refused:
            if not self._connected():
                raise
            try:
                mode = sftp.lstat(path).st_mode or 0
            except OSError:
                raise refused from None  # not there: refused for another reason
        if not stat.S_ISREG(mode):
            raise TempNameBlocked(blocked_message(path, mode, self._where()))
        try:
            sftp.remove(path)
        except OSError as refused:
            if not self._connected():
                raise
            why = "permission denied" if refused.errno == errno.EACCES else _describe(refused)
            raise TempNameBlocked(unremovable_message(path, self._where(), why)) from None
        return sftp._request(CMD_OPEN, path, flags, paramiko.SFTPAttributes())[1].get_binary()

    def _collect(self, sftp: paramiko.SFTPClient, nums: list[int], errors: list[OSError],
                 fsync: bool = False):
        """Read the replies to `nums`; keep refusals in `errors` so every reply is consumed."""
        reply = None
        for num in nums:
            try:
                reply = sftp._read_response(num)
            except _Unsupported as e:
                if fsync:  # the server lacks fsync@openssh.com: do not ask again this session
                    self._fsync = False
                else:
                    errors.append(e)
            except OSError as e:
                if fsync and type(e) is OSError and e.errno is None:
                    # The server's flush failed (SSH_FX_FAILURE: EIO, disk full): the put fails,
                    # so the file is never renamed into place with contents it may not hold.
                    e = OSError(f"fsync@openssh.com failed: {str(e) or 'no reason given'}")
                errors.append(e)
        return reply

    # -- session and retries ---------------------------------------------------------------------

    def _run(self, label: str, op: Callable[[paramiko.SFTPClient], T], *, retry: bool = True,
             what: str = "") -> T:
        """Run `op` on the session, reconnecting and retrying on network errors."""
        last: BaseException | None = None
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                sftp = self._session()
            except FixTheSetup:
                raise  # host key, login, key file: retrying will not help
            except (*_NETWORK_ERRORS, socket.timeout) as e:
                last = e
                self.close()
                continue
            try:
                return op(sftp)
            except OSError as e:
                if self._connected() and not isinstance(e, _NOT_A_REFUSAL):
                    raise self._refused(e, label, what) from None
                last = e
            except (EOFError, paramiko.SSHException) as e:
                last = e
            self.close()
            if not retry:
                raise SftpUnavailable(
                    f"{self._where()}: connection lost during {label}; its outcome is unknown "
                    f"({_describe(last)})"
                ) from None
        raise SftpUnavailable(
            f"{self._where()}: {label} failed after {self.attempts} attempts: {_describe(last)}"
        ) from None

    def _session(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._connected():
            return self._sftp
        self.close()
        client = _connect(self.endpoint)
        try:
            self._sftp = _SftpClient.from_transport(client.get_transport())
            if self._sftp is None:
                raise paramiko.SSHException("the server opened no SFTP session")
        except BaseException:
            client.close()
            raise
        self._sftp.get_channel().settimeout(self.endpoint.timeout)  # a hung server: no hang here
        self._client = client
        self._fsync = self.endpoint.fsync
        self.connects += 1
        key = client.get_transport().get_remote_server_key()
        log.info(
            "sftp connected host=%s port=%d user=%s auth=%s server_key=%s",
            self.endpoint.host, self.endpoint.port, self.endpoint.username,
            _method(self.endpoint), key.fingerprint,
        )
        return self._sftp

    def _connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def _refused(self, e: OSError, label: str, what: str = "") -> FixTheSetup:
        path = label.split(" ", 1)[-1]
        if e.errno == errno.ENOENT:
            where = f"{what} {path}".strip()
            return RemotePathMissing(f"{where} does not exist on {self._where()}")
        if e.errno == errno.EACCES:
            return FixTheSetup(
                f"{self._where()} refused {label}: permission denied for {self.endpoint.username}"
            )
        return FixTheSetup(f"{self._where()} refused {label}: {_describe(e)}")

    def _where(self) -> str:
        return f"sftp {self.endpoint.username}@{self.endpoint.address}"

    def _exists_message(self, dst: str) -> str:
        return (
            f"{dst} already exists on {self._where()}; the bridge never overwrites a file in a "
            "drop. Ask the warehouse whether the existing file was processed, then move it away."
        )


class _Unsupported(OSError):
    """The server answered SSH_FX_OP_UNSUPPORTED (an OSError without errno, as paramiko's)."""


class _SftpClient(paramiko.SFTPClient):
    """paramiko's client, keeping one status code its errors lose.

    paramiko turns every status but "no such file" and "permission denied" into a bare
    IOError(text), so "Operation unsupported" (skip the extension) and "Failure" (an fsync
    that did not flush) look alike. Here OP_UNSUPPORTED raises `_Unsupported`, by its code,
    whatever the server's text; every other status is converted as paramiko does.
    """

    def _convert_status(self, msg: Message) -> None:
        code, text = msg.get_int(), msg.get_text()
        if code == SFTP_OP_UNSUPPORTED:
            raise _Unsupported(text or "Operation unsupported")
        status = Message()
        status.add_int(code)
        status.add_string(text)
        status.rewind()
        super()._convert_status(status)


class _ShortWrite(OSError):
    """The server holds fewer bytes than were sent: rewrite the file."""


# OSErrors that are not the server refusing an operation: drop the session and retry.
_NOT_A_REFUSAL = (_ShortWrite, TimeoutError, ConnectionError)


class _RejectAndRemember(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, keeping the refused key so the error can name its fingerprint."""

    def __init__(self) -> None:
        self.offered: paramiko.PKey | None = None

    def missing_host_key(self, client, hostname, key):
        self.offered = key
        super().missing_host_key(client, hostname, key)


def _connect(ep: SftpEndpoint) -> paramiko.SSHClient:
    """Open an SSH connection and log in, translating every refusal."""
    pkey = _load_key(ep.private_key, ep.passphrase) if ep.private_key is not None else None
    client = paramiko.SSHClient()
    policy = _RejectAndRemember()
    try:
        client.load_host_keys(str(ep.known_hosts))
    except FileNotFoundError:
        pass  # every key is then unknown, which the policy reports with the fix
    except (OSError, paramiko.SSHException) as e:
        raise FixTheSetup(f"cannot read known_hosts {ep.known_hosts}: {e}") from None
    client.set_missing_host_key_policy(policy)
    try:
        client.connect(
            ep.host, port=ep.port, username=ep.username, pkey=pkey, password=ep.password,
            timeout=ep.timeout, banner_timeout=ep.timeout, auth_timeout=ep.timeout,
            channel_timeout=ep.timeout, allow_agent=False, look_for_keys=False,
        )
        return client
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyMismatch(
            f"host {ep.address} offered key {e.key.fingerprint}, but known_hosts {ep.known_hosts} "
            f"expects {e.expected_key.fingerprint}. The key has changed: this may be an "
            "interception. Do not connect until the warehouse confirms a new key out of band."
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise SftpAuthError(
            f"{ep.address} refused login for user {ep.username!r} by {_method(ep)}"
        ) from None
    except (*_NETWORK_ERRORS, socket.timeout):
        client.close()
        if policy.offered is not None:
            raise _unknown_host(ep, policy.offered) from None
        raise


def _unknown_host(ep: SftpEndpoint, key: paramiko.PKey) -> HostKeyMismatch:
    port = f"-p {ep.port} " if ep.port != 22 else ""
    return HostKeyMismatch(
        f"host {ep.address} is not in known_hosts {ep.known_hosts}; verify its key out of band "
        f"and add it: ssh-keyscan {port}{ep.host} (check the fingerprint {key.fingerprint} "
        "with the warehouse)"
    )


def _load_key(path: Path, passphrase: str | None = None) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path, password=passphrase.encode("utf-8") if passphrase else None)
    except FileNotFoundError:
        raise FixTheSetup(f"private key {path} does not exist") from None
    except paramiko.PasswordRequiredException:
        raise SftpAuthError(
            f"private key {path} is protected by a passphrase: give it in the secret"
            " BRIDGE_SFTP_KEY_PASSPHRASE_<NAME> (the warehouse name upper-cased)"
        ) from None
    except (paramiko.SSHException, OSError, ValueError) as e:
        if passphrase:
            raise SftpAuthError(
                f"private key {path} does not open with the passphrase given"
                f" (BRIDGE_SFTP_KEY_PASSPHRASE_<NAME>), or is damaged: {e}"
            ) from None
        raise SftpAuthError(f"cannot use private key {path}: {e}") from None


def _send_batch(sftp: paramiko.SFTPClient, requests: list[tuple]) -> list[int]:
    """Send several SFTP requests in one channel write (one SSH packet when small); return
    their request numbers. The framing is paramiko's `_async_request` + `_send_packet`."""
    frames, nums = [], []
    with sftp._lock:
        for kind, *args in requests:
            msg = Message()
            msg.add_int(sftp.request_number)
            for item in args:
                if isinstance(item, int64):
                    msg.add_int64(item)
                else:
                    msg.add_string(item)
            body = msg.asbytes()
            frames.append(struct.pack(">IB", len(body) + 1, kind) + body)
            nums.append(sftp.request_number)
            sftp._expecting[sftp.request_number] = type(None)
            sftp.request_number += 1
    sftp._write_all(b"".join(frames))
    return nums


def _stat_or_none(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPAttributes | None:
    try:
        return sftp.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _method(ep: SftpEndpoint) -> str:
    return f"key {ep.private_key}" if ep.private_key is not None else "password"


def _describe(e: BaseException | None) -> str:
    if e is None:
        return "unknown error"
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in text else f"{type(e).__name__}: {text}"
