"""A private OpenSSH server on 127.0.0.1 for tests and benchmarks.

Everything lives in one temporary folder: config, host key, client key pair, authorized_keys,
known_hosts, pid file and log. It logs in as the current user (root in CI) with the client key.
Importable from `bench/` by putting this folder on sys.path.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"

CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
MaxStartups 100
Subsystem sftp internal-sftp
"""


class SshdMissing(RuntimeError):
    pass


class OpenSshd:
    """`start()` runs `sshd -D -e -f CONFIG`; `stop()` ends it and every session it forked."""

    def __init__(self, folder: Path | None = None, port: int | None = None):
        if not os.path.exists(SSHD):
            raise SshdMissing(f"{SSHD} not found: run `apt-get install -y openssh-server`")
        self.dir = Path(folder or tempfile.mkdtemp(prefix="bridge-sshd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = self.dir / "host_ed25519"
        self.client_key = self.dir / "client_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.log = self.dir / "sshd.log"
        self._proc: subprocess.Popen | None = None
        self._make_keys()

    def _make_keys(self) -> None:
        for key in (self.host_key, self.client_key):
            if not key.exists():
                subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", key.name,
                                "-f", str(key)], check=True)
        authorized = self.dir / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        authorized.chmod(0o644)
        self.client_key.chmod(0o600)
        out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", f"{self.host_key}.pub"],
                             check=True, capture_output=True, text=True).stdout
        self.host_key_fingerprint = out.split()[1]

    @property
    def host_key_line(self) -> str:
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}"

    def start(self) -> OpenSshd:
        if os.getuid() == 0:
            subprocess.run(["install", "-d", "-m", "0755", "/run/sshd"], check=True)
        config = self.dir / "sshd_config"
        config.write_text(CONFIG.format(port=self.port, dir=self.dir))
        self.known_hosts.write_text(self.host_key_line + "\n")
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"sshd -t refused {config}: {check.stderr.strip()}")
        log = open(self.log, "ab")
        start = self.log.stat().st_size
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                      stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.log.read_bytes()[start:].decode(errors="replace")
            if "Server listening on" in text:
                return self
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self._proc.returncode}): {text.strip()}")
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"sshd did not start listening on port {self.port}: see {self.log}")

    def stop(self) -> None:
        """Stop the listener and kill the sessions it forked (they outlive it otherwise)."""
        if self._proc is None:
            return
        pids = _descendants(self._proc.pid)
        self._proc.terminate()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> OpenSshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
