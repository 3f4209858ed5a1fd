"""The daily stock publish's moments: pure arithmetic in the configured zone, `now` a parameter."""

from __future__ import annotations

from datetime import datetime, time as clock_time, timezone
from zoneinfo import ZoneInfo

import pytest

from bridge.windows import last_daily, next_daily

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize("now, last, following", [
    ("2026-11-26T20:59:59+00:00", "2026-11-25T21:00:00+00:00", "2026-11-26T21:00:00+00:00"),  # 21:59:59 CET
    ("2026-11-26T21:00:00+00:00", "2026-11-26T21:00:00+00:00", "2026-11-27T21:00:00+00:00"),  # on the dot
    ("2026-11-26T23:30:00+00:00", "2026-11-26T21:00:00+00:00", "2026-11-27T21:00:00+00:00"),  # already tomorrow in Berlin
    ("2026-07-01T19:59:00+00:00", "2026-06-30T20:00:00+00:00", "2026-07-01T20:00:00+00:00"),  # summer time: 20:00 UTC
    ("2026-03-29T12:00:00+00:00", "2026-03-28T21:00:00+00:00", "2026-03-29T20:00:00+00:00"),  # the day clocks go forward
])
def test_the_daily_publish_is_at_local_time_in_its_zone(now, last, following):
    moment = datetime.fromisoformat(now)
    assert last_daily(moment, clock_time(22, 0), BERLIN) == datetime.fromisoformat(last)
    assert next_daily(moment, clock_time(22, 0), BERLIN) == datetime.fromisoformat(following)


def test_a_publish_time_the_clocks_skip_falls_at_the_old_offset():
    night = datetime(2026, 3, 29, 3, 0, tzinfo=timezone.utc)  # 02:30 does not exist in Berlin that night
    assert last_daily(night, clock_time(2, 30), BERLIN) == datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)
