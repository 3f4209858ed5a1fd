"""Window arithmetic (bridge/windows.py): windows tile time from the bookmark up to now - lag."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bridge.windows import AMAZON_MIN_LAG, catch_up_eta, duration, next_window, windows_left

SIZE = timedelta(minutes=30)
LAG = timedelta(minutes=30)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def drain(bookmark, now, **options):
    """Every window one run would pull at `now`, committing each end as the next bookmark."""
    windows = []
    while (window := next_window(bookmark, now, **options)) is not None:
        windows.append(window)
        bookmark = window.end
        assert len(windows) < 10_000, "never caught up"
    return windows, bookmark


def test_the_first_window_without_a_bookmark_is_one_window_ending_lag_before_now():
    window = next_window(None, at("2026-11-20T12:30:00"), size=SIZE, lag=LAG)
    assert (window.start, window.end) == (at("2026-11-20T11:30:00"), at("2026-11-20T12:00:00"))
    assert window.query_start == window.start


def test_the_first_window_starts_at_the_configured_start_when_there_is_no_bookmark():
    window = next_window(None, at("2026-11-20T12:30:00"), size=SIZE, lag=LAG,
                         first_start=at("2026-11-20T08:00:00"))
    assert (window.start, window.end) == (at("2026-11-20T08:00:00"), at("2026-11-20T08:30:00"))


def test_a_bookmark_wins_over_the_configured_start():
    window = next_window(at("2026-11-20T10:00:00"), at("2026-11-20T12:30:00"), size=SIZE, lag=LAG,
                         first_start=at("2026-11-20T08:00:00"))
    assert window.start == at("2026-11-20T10:00:00")


def test_windows_over_many_runs_tile_time_with_no_gap_and_no_double():
    bookmark, pulled = at("2026-11-20T08:00:00"), []
    now = at("2026-11-20T09:00:00")
    for step in [timedelta(seconds=s) for s in (1, 59, 7.25, 600, 0.5, 1799, 3600, 13.999, 31, 90)] * 5:
        now += step
        windows, bookmark = drain(bookmark, now, size=SIZE, lag=LAG)
        pulled += windows

    assert pulled[0].start == at("2026-11-20T08:00:00")
    assert all(a.end == b.start for a, b in zip(pulled, pulled[1:]))
    assert all(w.start < w.end <= w.start + SIZE for w in pulled)
    assert pulled[-1].end == (now - LAG).replace(microsecond=0)


def test_after_downtime_the_bridge_catches_up_in_window_sized_steps():
    windows, bookmark = drain(at("2026-11-20T08:00:00"), at("2026-11-21T08:30:00"), size=SIZE, lag=LAG)
    assert len(windows) == 48
    assert all(w.end - w.start == SIZE for w in windows)
    assert bookmark == at("2026-11-21T08:00:00")


def test_the_last_catch_up_window_is_shortened_to_end_at_now_minus_lag():
    windows, bookmark = drain(at("2026-11-20T08:00:00"), at("2026-11-20T09:40:00"), size=SIZE, lag=LAG)
    assert [w.end - w.start for w in windows] == [SIZE, SIZE, timedelta(minutes=10)]
    assert bookmark == at("2026-11-20T09:10:00")


def test_the_upper_bound_is_never_closer_than_two_minutes_to_now_even_if_lag_is_lower():
    for lag in (timedelta(0), timedelta(seconds=30), timedelta(minutes=1)):
        window = next_window(at("2026-11-20T12:20:00"), at("2026-11-20T12:30:00"), size=SIZE, lag=lag)
        assert window.end == at("2026-11-20T12:30:00") - AMAZON_MIN_LAG


def test_a_sub_second_now_never_yields_a_zero_length_window():
    bookmark = at("2026-11-20T12:00:00")
    for micro in (1, 500_000, 999_999):
        now = at("2026-11-20T12:30:00").replace(microsecond=micro)
        assert next_window(bookmark, now, size=SIZE, lag=LAG) is None


def test_window_ends_are_whole_seconds_so_the_stored_bookmark_is_exact():
    window = next_window(None, at("2026-11-20T12:30:00.750000"), size=SIZE, lag=LAG)
    assert window.end.microsecond == 0 and window.start.microsecond == 0


def test_overlap_moves_only_the_query_start_back():
    window = next_window(at("2026-11-20T10:00:00"), at("2026-11-20T12:30:00"), size=SIZE, lag=LAG,
                         overlap=timedelta(minutes=5))
    assert window.query_start == at("2026-11-20T09:55:00")
    assert (window.start, window.end) == (at("2026-11-20T10:00:00"), at("2026-11-20T10:30:00"))


def test_with_overlap_committed_windows_still_tile():
    windows, _ = drain(at("2026-11-20T08:00:00"), at("2026-11-20T12:30:00"), size=SIZE, lag=LAG,
                       overlap=timedelta(minutes=5))
    assert all(a.end == b.start for a, b in zip(windows, windows[1:]))
    assert all(w.start - w.query_start == timedelta(minutes=5) for w in windows)


def test_no_window_when_caught_up():
    assert next_window(at("2026-11-20T12:00:00"), at("2026-11-20T12:30:00"), size=SIZE, lag=LAG) is None
    assert next_window(at("2026-11-20T12:00:00"), at("2026-11-20T12:29:59"), size=SIZE, lag=LAG) is None


def test_no_window_when_the_configured_start_is_still_in_the_future():
    assert next_window(None, at("2026-11-20T12:30:00"), size=SIZE, lag=LAG,
                       first_start=at("2026-11-21T00:00:00")) is None


def test_the_window_prints_as_an_iso_interval():
    window = next_window(None, at("2026-11-20T12:30:00"), size=SIZE, lag=LAG)
    assert str(window) == "2026-11-20T11:30:00Z/2026-11-20T12:00:00Z"


# --- catching up: how many windows are left, and when the bridge will be caught up ------------

def test_windows_left_is_how_many_windows_next_window_still_gives():
    for bookmark, now in ((at("2026-11-19T08:00:00"), at("2026-11-20T12:30:00")),
                          (at("2026-11-20T11:50:00"), at("2026-11-20T12:30:00")),
                          (None, at("2026-11-20T12:30:00")), (at("2026-11-20T12:00:00"), at("2026-11-20T12:30:00"))):
        windows, _ = drain(bookmark, now, size=SIZE, lag=LAG)
        assert windows_left(bookmark, now, size=SIZE, lag=LAG) == len(windows)
    assert windows_left(None, at("2026-11-20T12:30:00"), size=SIZE, lag=LAG, first_start=at("2026-11-20T09:00:00")) == 6


def test_the_catch_up_is_due_at_the_pace_of_the_windows_done_so_far():
    since = at("2026-11-20T12:00:00")
    assert catch_up_eta(10, 47, since, since + timedelta(minutes=30)) == timedelta(minutes=141)
    assert catch_up_eta(0, 47, since, since + timedelta(minutes=30)) is None  # no pace yet
    assert catch_up_eta(10, 0, since, since) == timedelta(0)
    assert [duration(d) for d in (timedelta(minutes=141), timedelta(seconds=61), timedelta(0), None)] == [
        "2h21m", "2m", "0m", "unknown"]
