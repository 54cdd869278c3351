"""Schedules: intervals on epoch multiples, cron in a time zone, one tick per
cron day across daylight-saving changes, and the settings that do not parse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from identity_store.settings import Settings
from identity_sync import registry
from identity_sync.schedules import ScheduleError, parse


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "zone", "now", "previous", "following"),
    [
        # every 5 minutes: ticks on multiples of 5 minutes since the epoch
        ("every 5m", "UTC", "2026-12-02T10:07:30", "2026-12-02T10:05:00", "2026-12-02T10:10:00"),
        # a tick's own instant is that tick (it is due now, not in 5 minutes)
        ("every 5m", "UTC", "2026-12-02T10:05:00", "2026-12-02T10:05:00", "2026-12-02T10:10:00"),
        ("every 30s", "UTC", "2026-12-02T10:00:59", "2026-12-02T10:00:30", "2026-12-02T10:01:00"),
        ("every 1h", "UTC", "2026-12-02T10:59:59", "2026-12-02T10:00:00", "2026-12-02T11:00:00"),
        ("every 1d", "UTC", "2026-12-02T10:00:00", "2026-12-02T00:00:00", "2026-12-03T00:00:00"),
        # the zone does not move an interval
        ("every 1h", "Asia/Kolkata", "2026-12-02T10:40:00", "2026-12-02T10:00:00", None),
        # cron in UTC
        ("0 2 * * *", "UTC", "2026-12-02T10:00:00", "2026-12-02T02:00:00", "2026-12-03T02:00:00"),
        ("0 2 * * *", "UTC", "2026-12-02T01:59:59", "2026-12-01T02:00:00", "2026-12-02T02:00:00"),
        ("0 2 * * *", "UTC", "2026-12-02T02:00:00", "2026-12-02T02:00:00", "2026-12-03T02:00:00"),
        # cron in Rome: 02:00 CET is 01:00 UTC in winter, 00:00 UTC in summer
        (
            "0 2 * * *",
            "Europe/Rome",
            "2026-12-02T10:00:00",
            "2026-12-02T01:00:00",
            "2026-12-03T01:00:00",
        ),
        (
            "0 2 * * *",
            "Europe/Rome",
            "2026-07-02T10:00:00",
            "2026-07-02T00:00:00",
            "2026-07-03T00:00:00",
        ),
        # every minute, and weekdays only (Saturday 2026-12-05 -> Friday's tick)
        ("* * * * *", "UTC", "2026-12-02T10:00:42", "2026-12-02T10:00:00", "2026-12-02T10:01:00"),
        ("0 9 * * 1-5", "UTC", "2026-12-05T12:00:00", "2026-12-04T09:00:00", "2026-12-07T09:00:00"),
    ],
)
def test_ticks(text: str, zone: str, now: str, previous: str, following: str | None) -> None:
    schedule = parse(text, zone)
    assert schedule.previous(_utc(now)) == _utc(previous)
    if following is not None:
        assert schedule.next(_utc(now)) == _utc(following)


@pytest.mark.parametrize("day", ["2026-03-29", "2026-10-25"])
def test_a_daily_cron_ticks_once_on_the_days_the_clocks_change(day: str) -> None:
    """Europe/Rome springs forward on 2026-03-29 (02:00 does not exist) and
    falls back on 2026-10-25 (02:00 happens twice): the deletion sync still
    runs exactly once each day."""
    zone = ZoneInfo("Europe/Rome")
    schedule = parse("0 2 * * *", "Europe/Rome")
    start = _utc(f"{day}T00:00:00") - timedelta(hours=6)
    ticks = set()
    for step in range(6 * 36):  # every 10 minutes over 36 hours
        tick = schedule.previous(start + timedelta(minutes=10 * step))
        assert tick is not None
        ticks.add(tick)
    on_the_day = [t for t in ticks if t.astimezone(zone).date().isoformat() == day]
    assert len(on_the_day) == 1, sorted(ticks)


@pytest.mark.parametrize("text", ["off", "OFF", "never", ""])
def test_off_has_no_ticks(text: str) -> None:
    schedule = parse(text)
    assert not schedule.enabled
    assert schedule.previous(_utc("2026-12-02T10:00:00")) is None
    assert schedule.next(_utc("2026-12-02T10:00:00")) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("every 0s", "from 1s to 366d"),
        ("every 367d", "from 1s to 366d"),
        ("every 5x", "expected"),
        ("every -5m", "expected"),
        ("every 99999999999999999999m", "expected"),
        ("5m", "expected"),
        ("* * *", "expected"),
        ("61 * * * *", "61 * * * *"),
        ("0 25 * * *", "0 25 * * *"),
        ("0 2 * * mon-fri-sat", "0 2 * * mon-fri-sat"),
        ("0 2 * * *\x00", "0 2 * * *"),
    ],
)
def test_a_schedule_that_does_not_parse_names_itself(text: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse(text)
    assert reason in str(caught.value)


def test_a_bad_schedule_setting_names_the_job_s_setting() -> None:
    """A typo in one job's schedule stops the worker at start with that schedule in
    the message, not at the job's first tick."""
    settings = Settings(job_expiry_schedule="every 5 minutes")
    if "expiry" not in registry.JOBS:
        pytest.fail("the expiry job is not registered")
    with pytest.raises(ScheduleError, match=r"^IDSTORE_JOB_EXPIRY_SCHEDULE: 'every 5 minutes'"):
        registry.schedules(settings)


def test_an_unknown_time_zone_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        Settings(jobs_timezone="Mars/Olympus")
