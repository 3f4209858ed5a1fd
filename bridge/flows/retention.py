"""Retention: the buyer data the bridge keeps is deleted on time, and each purge is logged.

Amazon's Data Protection Policy: buyer data (name, e-mail, address) deleted at most 30 days after
the order ships. The bridge counts from when it *delivered* the order to the warehouse, which is
never later than the shipment, so the rule holds however long the warehouse takes. What the
bridge itself keeps, and when it goes:
- the ledger's order records (sealed): name, e-mail and address stripped `retention.pii_days`
  after delivery (cancelled/skipped: after the last change); ids and lines stay, later flows need
  them. Answered inbound files' reasons and rejected rows' words go at the same time;
- the daily ledger backups: the same purge, once a day, in each backup (they are ledger copies);
- the spool's delivered files (sealed; resends too): `retention.spool_days` after delivery;
- the spool copies of confirmation and stock files: `retention.spool_days` after they were answered,
  and, for files from a local staff folder, what answering them left there (the copy in archive/
  or error/, the result file): a WMS's file may hold names and addresses. A warehouse's SFTP
  folders are its own: the bridge deletes nothing there;
- set-aside folders from accept-restore: `retention.spool_days` after they were made
  (`state.after_run`).
Orders not yet delivered (held, unrenderable) keep their data until they are delivered or
cancelled: the bridge still needs it to deliver them, and `status` lists them.

Every orders run purges (each step a few indexed queries when nothing is due); the summary line
is logged once a day and whenever something was purged:
    retention purged_records=N purged_spool_files=N purged_inbound_files=N purged_local_files=N
        purged_backup_records=N oldest_kept=DATE  (one line)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.config import Settings
from bridge.errors import BridgeError
from bridge.flows.inbound import purge_inbound_copies
from bridge.ledger import Ledger

log = logging.getLogger("bridge.retention")


@dataclass
class Purged:
    records: int = 0  # orders whose buyer data was stripped in the ledger
    spool_files: int = 0  # delivered files deleted from the spool
    inbound_files: int = 0  # inbound files whose spool copies were deleted
    local_files: int = 0  # archive/error copies and result files deleted from local staff folders
    backup_records: int = 0  # order records stripped in the daily backups
    oldest_kept: str | None = None  # when the oldest finished order still holding buyer data finished

    @property
    def anything(self) -> bool:
        return bool(self.records or self.spool_files or self.inbound_files or self.local_files or self.backup_records)

    def summary(self) -> str:
        return (f"retention purged_records={self.records} purged_spool_files={self.spool_files}"
                f" purged_inbound_files={self.inbound_files} purged_local_files={self.local_files}"
                f" purged_backup_records={self.backup_records}"
                f" oldest_kept={self.oldest_kept[:10] if self.oldest_kept else '-'}")


def purge(settings: Settings, ledger: Ledger, now: datetime, *, backups: bool = True) -> Purged:
    """Delete what retention says is due at `now`; `backups`: the daily backups too."""
    retention = settings.retention
    pii_cutoff = now - timedelta(days=retention.pii_days)
    purged = Purged()
    purged.records = ledger.purge_pii(pii_cutoff, now)
    for stored in ledger.spool_files_to_delete(now - timedelta(days=retention.spool_days)):
        (settings.spool_dir / stored.spool_path).unlink(missing_ok=True)
        ledger.mark_spool_deleted(stored.id, now)
        purged.spool_files += 1
    purged.inbound_files, purged.local_files = purge_inbound_copies(settings, ledger, now)
    if backups:
        purged.backup_records = _purge_backups(settings, ledger, pii_cutoff, now)
    purged.oldest_kept = ledger.oldest_buyer_data()
    return purged


def _purge_backups(settings: Settings, ledger: Ledger, cutoff: datetime, now: datetime) -> int:
    """The ledger purge in each daily backup; one that cannot be opened is named, not fatal."""
    from bridge.state import list_backups  # state composes the ledger; imported when used

    total = 0
    for path in list_backups(settings):
        try:
            total += ledger.purge_pii_in_copy(path, cutoff, now)
        except (BridgeError, OSError) as problem:
            log.warning("retention backup not purged path=%s: %s", path, problem)
    return total
