"""The bridge's own errors, grouped by what the caller must do about them.

    BridgeError
    ├── RetryLater            transient: try again on the next run, nothing is lost
    │   ├── AmazonUnavailable     network failure, 5xx, empty or non-JSON answer
    │   ├── AmazonThrottled       429; carries the wait the rate header asks for
    │   ├── CreateFeedUnknown     createFeed failed in a way that may still have created the
    │   │                         feed: find out (getFeeds) before submitting again
    │   ├── SftpUnavailable       connection refused/reset, timeout
    │   └── LedgerBusy            another process holds a write lock on the ledger
    ├── FixTheInput           a file, row or record is wrong; report it, go on with the rest
    │   ├── BadRecord             an Amazon record the bridge cannot use
    │   ├── AmazonNotFound        Amazon does not know a record it was asked for (404), e.g. an order
    │   ├── RenderError           an order cannot be laid out by a mapping (e.g. encoding)
    │   ├── BadFile               an inbound file cannot be read (encoding, header, DOCTYPE, ...)
    │   │   ├── IncompleteFile        it ends early (still being written?): tried again later
    │   │   └── NotRegularFile        a name in a drop is a link, a folder or a device: never read
    │   └── AmazonRejected        Amazon refused one request for good (400/404: its words kept)
    └── FixTheSetup           configuration or permissions; retrying will not help
        ├── ConfigError           config or mapping invalid (carries every problem found)
        ├── AmazonAuthError       LWA refused the credentials, 401/403 from SP-API
        ├── PiiAccessMissing      the app lacks the role that releases addresses
        ├── SftpAuthError         SFTP login refused
        ├── HostKeyMismatch       server key unknown or changed: possible interception
        ├── RemotePathMissing     a drop folder or file that should be there is not
        ├── FileExistsInDrop      a file of the target name is already in the drop (never overwritten)
        │   └── TempNameBlocked       the temporary name is a link or not a regular file (never
        │                             written through, never removed)
        ├── StateUnusable         the state folder, its lock file or a file in it cannot be used
        │   └── LedgerUnusable        the ledger is damaged, not a database, unreadable, or its disk full
        ├── StateKeyMismatch      BRIDGE_STATE_KEY is not the key the state was made with
        └── StateNotConfirmed     a used state folder lost its ledger, or holds an older or other one

Not an error, outside the tree: StopRequested (a BaseException, like KeyboardInterrupt) is
raised by the service's waits when SIGTERM arrives during one (a rate-limit wait, a retry's
pause). It unwinds the job from that wait, between two calls, past every `except Exception`
and `except BridgeError`: a stop is not a failure to log, retry or count.

Library exceptions (httpx, sp_api, paramiko) stop at the edge modules and come out as one of
these. Nothing above the edges catches a library's exception type.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class RetryLater(BridgeError):
    """Transient: the same call may succeed later."""


class AmazonUnavailable(RetryLater):
    pass


class AmazonThrottled(RetryLater):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CreateFeedUnknown(RetryLater):
    """createFeed is not idempotent: after this, sending the document again may publish it twice."""


class SftpUnavailable(RetryLater):
    pass


class StopRequested(BaseException):
    """A stop (SIGTERM/SIGINT) ended a wait inside a job: the job ends there."""


class FixTheInput(BridgeError):
    """The data is wrong; report it and continue with what is good."""


class BadRecord(FixTheInput):
    pass


class RenderError(FixTheInput):
    pass


class AmazonNotFound(FixTheInput):
    """Amazon answered 404 NotFound for one record (an order id): that record only."""


class BadFile(FixTheInput):
    """An inbound file (shipment confirmations, stock) that cannot be read as a whole."""


class IncompleteFile(BadFile):
    """An inbound file that ends early: left alone and tried again, until a time limit."""


class NotRegularFile(BadFile):
    """A name in a drop folder that is not a regular file (a symbolic link, a FIFO, a device):
    never followed, never read. A link could make the bridge read any file it can, and echo it
    to whoever reads the drop's results."""


class AmazonRejected(FixTheInput):
    """Amazon answered 4xx to a request that is final for its subject (e.g. one package)."""


class FixTheSetup(BridgeError):
    """A person must change configuration, credentials or permissions."""


class ConfigError(FixTheSetup):
    """Every problem found in a config or mapping file, each as `file: key: why`."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class AmazonAuthError(FixTheSetup):
    pass


class PiiAccessMissing(FixTheSetup):
    pass


class SftpAuthError(FixTheSetup):
    pass


class HostKeyMismatch(FixTheSetup):
    pass


class RemotePathMissing(FixTheSetup):
    """A folder (or file) the bridge was told to use does not exist in the drop."""


class FileExistsInDrop(FixTheSetup):
    """A rename would replace a file already in the drop; the bridge never overwrites.
    It blocks that file only: the drop's other files still go."""


class TempNameBlocked(FileExistsInDrop):
    """The temporary name a file is uploaded under is taken by a link, a folder or another
    thing that is not a regular file: the bridge neither writes through it nor removes it."""


class LedgerBusy(RetryLater):
    pass


class StateUnusable(FixTheSetup):
    """The state folder, the lock file, a spool file or a backup cannot be created or used."""


class LedgerUnusable(StateUnusable):
    pass


class StateKeyMismatch(FixTheSetup):
    pass


class StateNotConfirmed(FixTheSetup):
    """Running would send orders again; a person confirms a fresh start or a restored ledger."""
