"""When each job runs: a fixed interval or a cron expression in a time zone.

Cron expressions are croniter's (Pallets-Eco): five fields, evaluated in the
configured zone so that "02:00" stays 02:00 across daylight-saving changes.
Each wall-clock time ticks once: one the clocks skip (spring forward) ticks
at the next instant that exists, one they repeat (fall back) at its first
occurrence.
Intervals (``every 5m``) fall on multiples of their length since the Unix
epoch, so every worker computes the same ticks without talking to the others.

Missed ticks: a worker only ever claims the *latest* tick at or before now.
A worker that was down for an hour runs one catch-up run (the latest tick),
not one per missed tick; the jobs select what is still to do, so one run
does the work of all the missed ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

_INTERVAL = re.compile(r"^every\s+(\d{1,9})\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    """A schedule setting that does not parse."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """The ticks of one job; ``text`` is the setting it was read from."""

    text: str
    interval: timedelta | None = None
    cron: str | None = None
    zone: str = "UTC"

    @property
    def enabled(self) -> bool:
        return self.interval is not None or self.cron is not None

    def previous(self, now: datetime) -> datetime | None:
        """The latest tick at or before ``now`` (UTC), ``None`` when off."""
        if self.interval is not None:
            step = int(self.interval.total_seconds())
            elapsed = int((now - _EPOCH).total_seconds())
            return _EPOCH + timedelta(seconds=elapsed - elapsed % step)
        if self.cron is not None:
            zone = ZoneInfo(self.zone)
            local = now.astimezone(zone)
            if local.second == 0 and croniter.match(self.cron, local.replace(microsecond=0)):
                tick: datetime = local.replace(microsecond=0)
            else:
                tick = croniter(self.cron, local).get_prev(datetime)
            return _first_occurrence(tick, zone)
        return None

    def next(self, now: datetime) -> datetime | None:
        """The first tick after ``now`` (UTC), ``None`` when off."""
        if self.interval is not None:
            previous = self.previous(now)
            assert previous is not None
            return previous + self.interval
        if self.cron is not None:
            zone = ZoneInfo(self.zone)
            ticks = croniter(self.cron, now.astimezone(zone))
            while True:
                tick = _first_occurrence(ticks.get_next(datetime), zone)
                if tick > now:
                    return tick
        return None


def _first_occurrence(tick: datetime, zone: ZoneInfo) -> datetime:
    """``tick`` in UTC, or the first time its wall-clock time happened that
    day when the clocks fell back (02:30 happens twice on such a night; the
    job runs at the first): a daily job still ticks once a day."""
    wall = tick.astimezone(zone).replace(tzinfo=None)
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    return min(first, tick.astimezone(UTC))


def parse(text: str, zone: str = "UTC") -> Schedule:
    """``every <n>s|m|h|d``, a five-field cron expression, or ``off``."""
    value = text.strip().lower()
    if value in ("off", "never", ""):
        return Schedule(text=text, zone=zone)
    interval = _INTERVAL.match(value)
    if interval:
        seconds = int(interval.group(1)) * _UNITS[interval.group(2)]
        if not 1 <= seconds <= 366 * 86400:
            raise ScheduleError(f"{text!r}: an interval runs from 1s to 366d")
        return Schedule(text=text, interval=timedelta(seconds=seconds), zone=zone)
    if len(value.split()) != 5:
        raise ScheduleError(
            f"{text!r}: expected 'every <n>s|m|h|d', a five-field cron expression, or 'off'"
        )
    try:
        croniter(value, datetime.now(UTC))
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"{text!r}: {exc}") from exc
    return Schedule(text=text, cron=value, zone=zone)
