"""The README's state recipes work exactly as written: restoring a backup, a fresh start, changing
the state key. Each sh block is taken from the README and run by bash as root, as an operator
does, with the paths moved to a scratch folder and the service's user `fbm-bridge` played by
`nobody` (group `nogroup`); `systemctl` does nothing here. Afterwards every file in the state
folder is still the service's user's, and the service's key opens the state.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from bridge import state
from bridge.ledger import Ledger, Observation, OrderStatus
from bridge.sealing import Sealer
from harness import MAPPINGS, REPO, SECRETS, load, write_config
from test_state import KEY, NOW, deliver, order, used_state

USER, GROUP = "nobody", "nogroup"


def recipe(heading: str) -> str:
    """The first sh block after `heading` in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start:section.index("```", start)]


def others_can_run(path: Path) -> bool:
    path = path.resolve()
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


def command_for_others() -> list[str] | None:
    """How another user runs this checkout's bridge: the venv's python if they can, else a
    system python of the same version with the venv's packages (a venv made from a python
    under /root, as on the CI machine)."""
    if others_can_run(Path(sys.executable)):
        return [sys.executable, "-m", "bridge"]
    system = Path("/usr/bin/python3")
    if not system.exists():
        return None
    version = subprocess.run([str(system), "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    site = next((p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)), None)
    if version != str(tuple(sys.version_info[:2])) or site is None or not others_can_run(Path(site)):
        return None
    return ["env", f"PYTHONPATH={site}:{REPO}", str(system), "-m", "bridge"]


@dataclass
class Host:
    root: Path

    @property
    def credentials(self) -> Path:
        return self.root / "etc" / "credentials"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "bridge.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def run(self, script: str) -> subprocess.CompletedProcess:
        """A README block as bash runs it for the operator, on this host's paths."""
        script = (script.replace("/opt/fbm-bridge/.venv/bin/fbm-bridge", "fbm-bridge")
                  .replace("/etc/fbm-bridge/credentials", str(self.credentials))
                  .replace("/etc/fbm-bridge/bridge.toml", str(self.config))
                  .replace("/var/lib/fbm-bridge", str(self.state)))
        script = re.sub(r"(?<!\S)(-u|chown|chgrp) fbm-bridge\b",
                        lambda m: f"{m[1]} {GROUP if m[1] == 'chgrp' else USER}", script)
        assert not re.search(r"fbm-bridge(?! (keygen|--config)\b)(?!$)", script, re.M), script
        prelude = "set -euo pipefail\nsystemctl() { :; }\n"
        environ = {**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
                   "PATH": f"{self.root / 'bin'}:{os.environ['PATH']}"}
        return subprocess.run(["bash", "-c", prelude + script], cwd=self.root, env=environ,
                              capture_output=True, text=True, timeout=120)

    def give_state_to(self, user: str) -> None:
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        for path in [self.state, *self.state.rglob("*")]:
            os.chown(path, uid, gid)

    def owners(self) -> set[str]:
        return {pwd.getpwuid(p.stat().st_uid).pw_name for p in [self.state, *self.state.rglob("*")]}


@pytest.fixture
def host():
    """Install's layout in a scratch folder: /etc/fbm-bridge (root, group of the service, 0750),
    the credentials 0640, the state folder the service's user's; a state that was used."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("plays two users: needs root and runuser")
    try:
        pwd.getpwnam(USER), grp.getgrnam(GROUP)
    except KeyError:
        pytest.skip(f"needs the user {USER} and the group {GROUP}")
    command = command_for_others()
    if command is None:
        pytest.skip("no python that another user can run this checkout with")
    root = Path(tempfile.mkdtemp(prefix="bridge-recipes-"))
    try:
        os.chmod(root, 0o755)
        host = Host(root)
        (root / "bin").mkdir(mode=0o755)
        (root / "bin" / "fbm-bridge").write_text(f"#!/bin/sh\nexec {' '.join(command)} \"$@\"\n")
        os.chmod(root / "bin" / "fbm-bridge", 0o755)
        gid = grp.getgrnam(GROUP).gr_gid
        for folder in (root / "etc", host.credentials):  # install -d -m 0750 -g fbm-bridge
            folder.mkdir(mode=0o750)
            os.chown(folder, 0, gid)
        (root / "etc" / "known_hosts").write_text("127.0.0.1 ssh-ed25519 AAAA\n")
        (root / "etc" / "id_ed25519").write_text("not read here\n")
        write_config(root / "etc", sandbox_url="http://127.0.0.1:9", token_url="http://127.0.0.1:9/auth/o2/token",
                     warehouses=[{"name": "wh", "mapping": str(MAPPINGS / "acme-csv.toml"), "host": "127.0.0.1",
                                  "username": "u", "known_hosts": str(root / "etc" / "known_hosts"),
                                  "private_key": str(root / "etc" / "id_ed25519"), "orders_folder": "/in"}])
        host.config.write_text(host.config.read_text().replace(str(root / "etc" / "state"), str(host.state)))
        key = host.credentials / "BRIDGE_STATE_KEY"
        key.write_text(SECRETS["BRIDGE_STATE_KEY"] + "\n")
        os.chown(key, 0, gid)  # chgrp fbm-bridge ... && chmod 0640 ...
        os.chmod(key, 0o640)
        used_state(load(host.config))
        host.give_state_to(USER)
        yield host
    finally:
        shutil.rmtree(root)


def test_changing_the_state_key_as_written_reseals_the_state_and_leaves_the_service_its_key(host):
    done = host.run(recipe("### Changing the state key"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("rekey done: 2 order record(s), 1 spool file(s) and 1 backup(s) resealed")
    key = host.credentials / "BRIDGE_STATE_KEY"
    assert not (host.credentials / "BRIDGE_STATE_KEY_NEW").exists()
    info = key.stat()
    assert (info.st_uid, grp.getgrgid(info.st_gid).gr_name, info.st_mode & 0o777) == (0, GROUP, 0o640)
    new = Sealer(key.read_text().strip())
    Ledger(host.state / "ledger.sqlite", new).close()  # the service's key is the state's now
    assert host.owners() == {USER}


def test_restoring_a_backup_as_written_is_accepted_and_leaves_the_state_the_services(host):
    settings = load(host.config)
    [backup] = state.list_backups(settings)
    host.give_state_to("root")  # the service's run after the backup, played here by root
    ledger = state.open_ledger(settings, KEY, NOW)
    ledger.record([Observation(order("C"), OrderStatus.PENDING, "", "wh")], NOW)
    deliver(settings, ledger, "C", b"C")
    state.after_run(settings, ledger, NOW + timedelta(hours=1))
    ledger.close()
    host.give_state_to(USER)

    done = host.run(recipe("### Backups and restoring one").replace("ledger-20261125.sqlite", backup.name))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("the ledger in place is accepted: an older copy of this folder's ledger")
    assert host.owners() == {USER}


def test_a_fresh_start_as_written_starts_a_ledger_of_the_services(host):
    for path in host.state.glob("ledger.sqlite*"):
        path.unlink()

    done = host.run(recipe("### A lost ledger: fresh start"))

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("fresh start recorded: orders updated from 2026-11-20T00:00:00Z on")
    assert host.owners() == {USER}
