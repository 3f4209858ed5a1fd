"""Window arithmetic for pulling orders, and the daily stock publish's moments: pure, `now` is
always a parameter.

Windows tile time: each starts where the last committed one ended, so there is no gap and no
double. A window's upper bound stays `lag` behind now (never less than Amazon's 2 minutes), and
after downtime the bridge catches up in window-sized steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo

AMAZON_MIN_LAG = timedelta(minutes=2)


@dataclass(frozen=True)
class Window:
    start: datetime  # the committed end of the previous window
    end: datetime  # committed as the next start once the window's orders are recorded
    query_start: datetime  # start minus the configured overlap: re-reads are harmless

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%dT%H:%M:%SZ}/{self.end:%Y-%m-%dT%H:%M:%SZ}"


def next_window(
    bookmark: datetime | None,
    now: datetime,
    *,
    size: timedelta,
    lag: timedelta,
    overlap: timedelta = timedelta(0),
    first_start: datetime | None = None,
) -> Window | None:
    """The next window to pull, or None when the bridge has caught up with `now - lag`."""
    # Whole seconds: bookmarks are stored (and sent to Amazon) to the second, so a ceiling with
    # microseconds would leave a sliver of a window behind after every run.
    ceiling = (now - max(lag, AMAZON_MIN_LAG)).replace(microsecond=0)
    start = bookmark or first_start or (ceiling - size)
    if start >= ceiling:
        return None
    end = min(start + size, ceiling)
    return Window(start=start, end=end, query_start=start - overlap)


def windows_left(
    bookmark: datetime | None,
    now: datetime,
    *,
    size: timedelta,
    lag: timedelta,
    first_start: datetime | None = None,
) -> int:
    """How many windows `next_window` still gives before the bridge has caught up with `now`."""
    ceiling = (now - max(lag, AMAZON_MIN_LAG)).replace(microsecond=0)
    start = bookmark or first_start or (ceiling - size)
    if start >= ceiling:
        return 0
    return -(-(ceiling - start) // size)  # whole windows, the last one possibly short


def catch_up_eta(done: int, left: int, since: datetime, now: datetime) -> timedelta | None:
    """When the bridge will have caught up, at the pace of the windows done since `since` (Amazon's
    rate limit, the runs' interval and their window limit all show in that pace); None before a
    window is done."""
    if left == 0:
        return timedelta(0)
    if done == 0 or now <= since:
        return None
    return (now - since) * left / done


def duration(span: timedelta | None) -> str:
    """`3h05m`, `12m`, or `unknown` (a pace not yet measured)."""
    if span is None:
        return "unknown"
    minutes = int(span.total_seconds() + 59) // 60
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def last_daily(now: datetime, at: time, zone: tzinfo) -> datetime:
    """The latest moment at or before `now` (UTC) when the clocks in `zone` showed `at`: the
    daily stock publish that is due. On the day clocks skip `at` (spring forward) it is the
    moment `at` would have been with the old offset."""
    local_day = now.astimezone(zone).date()
    for day in (local_day, local_day - timedelta(days=1)):
        moment = datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)
        if moment <= now:
            return moment
    raise AssertionError("unreachable: yesterday's moment is always in the past")


def next_daily(now: datetime, at: time, zone: tzinfo) -> datetime:
    """The first moment after `now` (UTC) when the clocks in `zone` show `at`."""
    local_day = now.astimezone(zone).date()
    for day in (local_day, local_day + timedelta(days=1), local_day + timedelta(days=2)):
        moment = datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)
        if moment > now:
            return moment
    raise AssertionError("unreachable")
