"""A warehouse's SFTP server: SSH through paramiko's public API, the SFTP requests framed by
`edges.sftp_wire` (so that several files' requests are in flight at once, and each file is
flushed to the server's disk, fsync@openssh.com, before it is renamed into place).

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
import io
import logging
import socket
import stat
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import paramiko
from paramiko.hostkeys import InvalidHostKey

from bridge.config import SftpEndpoint  # settings are records: re-exported for the edge's callers
from bridge.config import known_hosts_problem
from bridge.edges import sftp_wire as wire
from bridge.edges.folders import RemoteFile, blocked_message, unremovable_message
from bridge.errors import (
    BridgeError,
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
_LOGGED_IN: set[tuple] = set()  # (host, port, user, server key) said at INFO by this process
T = TypeVar("T")

_NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)
_NEW_FILE = wire.FLAG_WRITE | wire.FLAG_CREATE | wire.FLAG_EXCL
# Bytes of file data sent ahead of the replies collected: enough to keep the server busy,
# little enough that its replies never fill the channel's window while we are still sending.
_AHEAD = 1 << 20


class SftpDrop:
    """One warehouse's SFTP server. One session, opened lazily and reused for the run;
    reconnects with backoff. Several files go at once (`put_files`, `rename_files`): every
    request for them is sent before the replies are read, so the wire's round trips are not
    paid file by file.

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
        self._sftp: wire.Session | None = None
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
        [outcome] = self.put_files([(data, remote_path)])
        if outcome is not None:
            raise outcome

    def put_files(self, files: Sequence[tuple[bytes, str]]) -> list[BridgeError | None]:
        outcomes: list[BridgeError | None] = []

        def put(sftp: wire.Session) -> None:
            outcomes[:] = self._put(sftp, files)

        label = f"put {files[0][1]}" if len(files) == 1 else f"put {len(files)} files ({files[0][1]}, ...)"
        self._run(label, put, what="folder of")
        return outcomes

    def rename(self, src: str, dst: str) -> None:
        def rename(sftp: wire.Session) -> None:
            try:
                sftp.rename(src, dst)  # SFTPv3 rename never replaces an existing file
            except OSError as e:
                if not self._connected():
                    raise
                raise self._rename_refused(sftp, src, dst, e) from None

        self._run(f"rename {src}", rename, retry=False)

    def rename_files(self, pairs: Sequence[tuple[str, str]]) -> list[BridgeError | None]:
        outcomes: list[BridgeError | None] = []

        def rename(sftp: wire.Session) -> None:
            sent = [sftp.send(wire.RENAME, wire.string(src), wire.string(dst)) for src, dst in pairs]
            for (src, dst), number in zip(pairs, sent):
                try:
                    sftp.status(number)
                    outcomes.append(None)
                except OSError as e:
                    if not self._connected():
                        raise
                    outcomes.append(self._rename_refused(sftp, src, dst, e))

        label = f"rename {pairs[0][0]}" if len(pairs) == 1 else f"rename of {len(pairs)} files ({pairs[0][0]}, ...)"
        self._run(label, rename, retry=False)
        return outcomes

    def exists(self, path: str) -> bool:
        return self._run(f"stat {path}", lambda sftp: _stat_or_none(sftp, path) is not None)

    def stat_files(self, paths: Sequence[str]) -> list[RemoteFile | None]:
        """Every path's LSTAT sent before the replies are read: one round trip for them all."""
        def stat_all(sftp: wire.Session) -> list[RemoteFile | None]:
            sent = [sftp.send(wire.LSTAT, wire.string(path)) for path in paths]
            found: list[RemoteFile | None] = []
            errors: list[OSError] = []
            for path, number in zip(paths, sent):
                attrs = _collect(sftp.attributes, number, errors)
                if errors and errors[-1].errno == errno.ENOENT:
                    errors.pop()
                regular = attrs is not None and stat.S_ISREG(attrs.st_mode or 0)
                found.append(RemoteFile(path.rpartition("/")[2], attrs.st_size or 0, float(attrs.st_mtime or 0))
                             if regular else None)
            if errors:
                raise errors[0]
            return found

        if not paths:
            return []
        label = f"stat {paths[0]}" if len(paths) == 1 else f"stat of {len(paths)} files ({paths[0]}, ...)"
        return self._run(label, stat_all)

    def listdir(self, folder: str) -> list[RemoteFile]:
        def listdir(sftp: wire.Session) -> list[RemoteFile]:
            files = [
                RemoteFile(a.filename, a.st_size or 0, float(a.st_mtime or 0))
                for a in sftp.listdir_attr(folder)
                if a.st_mode is not None and stat.S_ISREG(a.st_mode)
            ]
            return sorted(files, key=lambda f: f.name)

        return self._run(f"list {folder}", listdir, what="folder")

    def read_bytes(self, path: str) -> bytes:
        out = io.BytesIO()
        self.read_into(path, out)
        return out.getvalue()

    def remove(self, path: str) -> None:
        self._run(f"remove {path}", lambda sftp: sftp.remove(path), retry=False)

    def read_into(self, path: str, stream) -> int:
        """Copy `path` into the binary `stream` (rewound and truncated on each try), without
        holding the whole file in memory; returns the bytes copied."""
        def read(sftp: wire.Session) -> int:
            stream.seek(0)
            stream.truncate()
            return sftp.read_into(path, stream)

        return self._run(f"read {path}", read)

    def makedirs(self, folder: str) -> None:
        def makedirs(sftp: wire.Session, path: str = folder) -> None:
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

    # -- writing: every file's requests in flight together ---------------------------------------

    def _put(self, sftp: wire.Session, files: Sequence[tuple[bytes, str]]) -> list[BridgeError | None]:
        """Create each file anew, then send its writes, the fsync, an fstat and the close; the
        opens of all files go together, then the rest, replies read behind the sending.

        Each file is created with CREATE|EXCL, which OpenSSH's sftp-server passes on as
        O_CREAT|O_EXCL: an existing name (a symbolic link too, even a dangling one) is refused,
        never followed (see `_create_again`). Each file's outcome, in order; a file the server
        holds fewer bytes of than were sent raises `_ShortWrite`, and the whole put is done again.
        """
        outcomes: list[BridgeError | None] = [None] * len(files)
        opening = [sftp.send(wire.OPEN, wire.string(path), wire.u32(_NEW_FILE), wire.NO_ATTRIBUTES)
                   for _, path in files]
        handles: dict[int, bytes] = {}
        for index, number in enumerate(opening):
            path = files[index][1]
            try:
                try:
                    handles[index] = sftp.handle(number)
                except OSError as refused:
                    if not self._connected():
                        raise
                    handles[index] = self._create_again(sftp, path, refused)
            except FixTheSetup as problem:
                outcomes[index] = problem
            except OSError as e:
                if not self._connected() or isinstance(e, _NOT_A_REFUSAL):
                    raise
                outcomes[index] = self._refused(e, f"put {path}", "folder of")
        sending: deque[tuple[int, list[int], int | None, int, int]] = deque()
        ahead = 0
        for index, handle in handles.items():
            data, name = files[index][0], wire.string(handle)
            written = [sftp.send(wire.WRITE, name, wire.u64(at), wire.string(data[at:at + wire.CHUNK]))
                       for at in range(0, len(data), wire.CHUNK)]
            fsync = sftp.send(wire.EXTENDED, wire.string("fsync@openssh.com"), name) if self._fsync else None
            sending.append((index, written, fsync, sftp.send(wire.FSTAT, name), sftp.send(wire.CLOSE, name)))
            ahead += len(data)
            while ahead > _AHEAD and len(sending) > 1:
                finished = sending.popleft()
                ahead -= len(files[finished[0]][0])
                outcomes[finished[0]] = self._finish(sftp, files[finished[0]], *finished[1:])
        for index, written, fsync, fstat, close in sending:
            outcomes[index] = self._finish(sftp, files[index], written, fsync, fstat, close)
        return outcomes

    def _finish(self, sftp: wire.Session, file: tuple[bytes, str], written: list[int], fsync: int | None,
                fstat: int, close: int) -> BridgeError | None:
        """Read one file's replies: None if the server holds all of it (synced), else why not."""
        data, path = file
        errors: list[OSError] = []
        for number in written:
            _collect(sftp.status, number, errors)
        if fsync is not None:
            try:
                sftp.status(fsync)
            except wire.Unsupported:  # the server lacks fsync@openssh.com: not asked again
                self._fsync = False
            except OSError as e:
                if e.errno is None:
                    # The server's flush failed (SSH_FX_FAILURE: EIO, disk full): the put fails,
                    # so the file is never renamed into place with contents it may not hold.
                    e = OSError(f"fsync@openssh.com failed: {str(e) or 'no reason given'}")
                errors.append(e)
        size = _collect(sftp.attributes, fstat, errors)
        _collect(sftp.status, close, errors)
        if errors:
            if not self._connected():
                raise errors[0]
            return self._refused(errors[0], f"put {path}", "folder of")
        if size is None or size.st_size != len(data):
            raise _ShortWrite(f"{path}: wrote {len(data)} bytes, server has {size and size.st_size}")
        return None

    def _create_again(self, sftp: wire.Session, path: str, refused: OSError) -> bytes:
        """The exclusive create of `path` was refused: if a regular file is there, a previous
        attempt's (a put cut short), it is removed and the file created again; a link, a folder
        or anything else is left alone (`TempNameBlocked`)."""
        try:
            mode = sftp.lstat(path).st_mode or 0
        except OSError:
            raise refused from None  # not there: refused for another reason
        if not stat.S_ISREG(mode):
            raise TempNameBlocked(blocked_message(path, mode, self._where()))
        try:
            sftp.remove(path)
        except OSError as e:
            if not self._connected():
                raise
            why = "permission denied" if e.errno == errno.EACCES else _describe(e)
            raise TempNameBlocked(unremovable_message(path, self._where(), why)) from None
        return sftp.open(path, _NEW_FILE)

    def _rename_refused(self, sftp: wire.Session, src: str, dst: str, refused: OSError) -> FixTheSetup:
        if _stat_or_none(sftp, dst) is not None:
            return FileExistsInDrop(self._exists_message(dst))
        if _stat_or_none(sftp, src) is None:
            return RemotePathMissing(f"{src} does not exist on {self._where()}")
        return self._refused(refused, f"rename {src} to {dst}")

    # -- session and retries ---------------------------------------------------------------------

    def _run(self, label: str, op: Callable[[wire.Session], T], *, retry: bool = True,
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

    def _session(self) -> wire.Session:
        if self._sftp is not None and self._connected():
            return self._sftp
        self.close()
        client = _connect(self.endpoint)
        try:
            channel = client.get_transport().open_session(timeout=self.endpoint.timeout)
            self._sftp = wire.Session(channel, self.endpoint.timeout)  # a hung server: no hang here
        except BaseException:
            client.close()
            raise
        self._client = client
        self._fsync = self.endpoint.fsync
        self.connects += 1
        key = client.get_transport().get_remote_server_key()
        seen = (self.endpoint.host, self.endpoint.port, self.endpoint.username, key.fingerprint)
        # every poll logs in anew: said once a process (and again if the server's key is another)
        log.log(
            logging.DEBUG if seen in _LOGGED_IN else logging.INFO,
            "sftp connected host=%s port=%d user=%s auth=%s server_key=%s",
            self.endpoint.host, self.endpoint.port, self.endpoint.username,
            "password" if self.endpoint.private_key is None else f"key key_file={self.endpoint.private_key}",
            key.fingerprint,
        )
        _LOGGED_IN.add(seen)
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
    except (OSError, paramiko.SSHException, InvalidHostKey, UnicodeDecodeError, ValueError) as e:
        # Changed since the config was loaded: the same words as at load, naming the line.
        why = known_hosts_problem(ep.known_hosts) or f"{ep.known_hosts}: {type(e).__name__}"
        raise FixTheSetup(f"cannot read known_hosts: {why}") from None
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
            portless = ep.port != 22 and client.get_host_keys().lookup(ep.host) is not None
            raise _unknown_host(ep, policy.offered, portless) from None
        raise


def _unknown_host(ep: SftpEndpoint, key: paramiko.PKey, portless: bool = False) -> HostKeyMismatch:
    port = f"-p {ep.port} " if ep.port != 22 else ""
    hint = (f"; it has an entry for {ep.host} without the port, which is port 22's: for port {ep.port}"
            f" the line begins [{ep.host}]:{ep.port}") if portless else ""
    return HostKeyMismatch(
        f"host {ep.address} is not in known_hosts {ep.known_hosts}{hint}; verify its key out of band "
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
        if _is_public_key(path):
            raise SftpAuthError(f"private key {path} is a public key (the .pub half): give the private"
                                f" half, the file without .pub") from None
        if passphrase:
            raise SftpAuthError(
                f"private key {path} does not open with the passphrase given"
                f" (BRIDGE_SFTP_KEY_PASSPHRASE_<NAME>), or is damaged: {e}"
            ) from None
        raise SftpAuthError(f"cannot use private key {path}: {e}") from None


def _stat_or_none(sftp: wire.Session, path: str) -> wire.Attributes | None:
    try:
        return sftp.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _method(ep: SftpEndpoint) -> str:
    return f"key {ep.private_key}" if ep.private_key is not None else "password"


def _is_public_key(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            start = f.read(64)
    except OSError:
        return False
    return start.startswith((b"ssh-", b"ecdsa-sha2-", b"sk-", b"---- BEGIN SSH2 PUBLIC KEY"))


def _describe(e: BaseException | None) -> str:
    """A network failure in words, without paramiko's class names where it has plainer ones."""
    if e is None:
        return "unknown error"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        where = ", ".join(sorted({f"{address[0]} port {address[1]}" for address in e.errors}))
        return f"nothing accepts connections at {where} (connection refused): check host and port, and that the server runs"
    if isinstance(e, socket.gaierror):
        return f"the host name cannot be resolved ({e.strerror}): check host"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "no answer (timed out): check host and port, and any firewall in between"
    text = str(e) or type(e).__name__
    return text if type(e).__name__ in text else f"{type(e).__name__}: {text}"


def _collect(read: Callable[[int], T], number: int, errors: list[OSError]) -> T | None:
    """One reply, its refusal kept in `errors` so that every reply is read."""
    try:
        return read(number)
    except OSError as e:
        errors.append(e)
        return None
