"""Advance invoice schedules: when a subscription's renewals are invoiced ahead of their terms.

Two kinds, as Chargebee offers them. *Specific dates*: up to five dates, each invoicing a
number of the next renewals not yet invoiced. *Fixed intervals*: every interval of
`terms_to_charge` terms is invoiced `days_before_renewal` days before it starts, until a
number of intervals, a date, or the subscription's end; the first interval starts at the
next renewal, or at the one after when the next is closer than `days_before_renewal`.

A schedule is kept on the subscription (`data["advance_schedule"]`) and is pure data here:
this module validates it, says when it next runs and how many terms that run invoices, and
renders it. The term engine (`subscriptions`) runs it, through the same path as
`charge_future_renewals`, so a scheduled run and an immediate one bill identically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from meterbill.billing.params import Id, Params, UnixTime, from_unix, unix
from meterbill.core.errors import InvalidInput, InvalidState

KEY = "advance_schedule"
MAX_DATES = 5  # Chargebee's limit for a specific dates schedule
MAX_TERMS = 100
SPECIFIC_DATES, FIXED_INTERVALS = "specific_dates", "fixed_intervals"
EndScheduleOn = Literal["after_number_of_intervals", "specific_date", "subscription_end"]


class SpecificDate(Params):
    id: Id | None = None
    terms_to_charge: int | None = Field(default=None, ge=1, le=MAX_TERMS)
    date: UnixTime | None = None


class FixedInterval(Params):
    number_of_occurrences: int | None = Field(default=None, ge=1, le=1000)
    days_before_renewal: int | None = Field(default=None, ge=1, le=365)
    end_schedule_on: EndScheduleOn | None = None
    end_date: UnixTime | None = None


class ScheduleParams(Params):
    """What charge_future_renewals and edit_advance_invoice_schedule share."""

    terms_to_charge: int | None = Field(default=None, ge=1, le=MAX_TERMS)
    schedule_type: Literal["immediate", "specific_dates", "fixed_intervals"] | None = None
    specific_dates_schedule: list[SpecificDate] | None = Field(default=None, max_length=MAX_DATES)
    fixed_interval_schedule: FixedInterval | None = None


class RemovedDate(Params):
    id: Id


class RemoveParams(Params):
    specific_dates_schedule: list[RemovedDate] | None = Field(default=None, max_length=MAX_DATES)


@dataclass(frozen=True)
class Run:
    """A schedule's next run: at `at`, invoice the next `terms` renewals not yet invoiced."""

    at: datetime
    terms: int
    date_id: str | None = None  # the specific date that runs (None for an interval)


# `upcoming(k)`: the start of the k-th renewal not yet invoiced (0 = the first of them).
Upcoming = Callable[[int], datetime]


def create(params: ScheduleParams, now: datetime, upcoming: Upcoming, new_id: Callable[[], str]) -> dict[str, Any]:
    """A new schedule of `params.schedule_type` (specific dates or fixed intervals)."""
    if params.schedule_type == SPECIFIC_DATES:
        if params.fixed_interval_schedule is not None:
            raise _applies_only("fixed_interval_schedule", FIXED_INTERVALS)
        if params.terms_to_charge is not None:
            raise InvalidInput("terms_to_charge : each date gives its own specific_dates_schedule[terms_to_charge]",
                               param="terms_to_charge")
        return _dates({"type": SPECIFIC_DATES, "dates": []}, params.specific_dates_schedule, now, new_id)
    if params.specific_dates_schedule is not None:
        raise _applies_only("specific_dates_schedule", SPECIFIC_DATES)
    given = params.fixed_interval_schedule or FixedInterval()
    schedule = {"type": FIXED_INTERVALS, "id": new_id(), "terms_to_charge": params.terms_to_charge or 1,
                "end_schedule_on": given.end_schedule_on or "subscription_end", "created_at": unix(now),
                "intervals_invoiced": 0}
    return _intervals(schedule, given, now, upcoming)


def edit(schedule: dict[str, Any] | None, params: ScheduleParams, now: datetime, upcoming: Upcoming,
         new_id: Callable[[], str]) -> dict[str, Any]:
    """The schedule changed as given: specific dates with an `id` are changed, without one added;
    an interval's settings are replaced where given. Another `schedule_type` replaces it."""
    if schedule is None:
        raise InvalidState("The subscription has no advance invoice schedule; create one with "
                           "charge_future_renewals and a schedule_type")
    kind = params.schedule_type or schedule["type"]
    if kind == "immediate":
        raise InvalidInput("schedule_type : immediate is not a schedule; use charge_future_renewals",
                           param="schedule_type")
    if kind != schedule["type"]:
        return create(params.model_copy(update={"schedule_type": kind}), now, upcoming, new_id)
    if kind == SPECIFIC_DATES:
        if params.fixed_interval_schedule is not None:
            raise _applies_only("fixed_interval_schedule", FIXED_INTERVALS)
        if params.terms_to_charge is not None:
            raise InvalidInput("terms_to_charge : each date gives its own specific_dates_schedule[terms_to_charge]",
                               param="terms_to_charge")
        if not params.specific_dates_schedule:
            raise InvalidInput("specific_dates_schedule : give the dates to change or add",
                               param="specific_dates_schedule[date][0]")
        return _dates(schedule, params.specific_dates_schedule, now, new_id)
    if params.specific_dates_schedule is not None:
        raise _applies_only("specific_dates_schedule", SPECIFIC_DATES)
    changed = {**schedule, "created_at": unix(now)}
    if params.terms_to_charge is not None:
        changed["terms_to_charge"] = params.terms_to_charge
    given = params.fixed_interval_schedule or FixedInterval()
    if given.end_schedule_on is not None:
        changed["end_schedule_on"] = given.end_schedule_on
    return _intervals(changed, given, now, upcoming)


def remove(schedule: dict[str, Any] | None, params: RemoveParams) -> dict[str, Any] | None:
    """The schedule without the dates named, or None: the whole schedule is removed when no date
    is named (or every date is)."""
    if schedule is None:
        raise InvalidState("The subscription has no advance invoice schedule")
    if params.specific_dates_schedule is None:
        return None
    if schedule["type"] != SPECIFIC_DATES:
        raise _applies_only("specific_dates_schedule", SPECIFIC_DATES)
    ids = [d.id for d in params.specific_dates_schedule]
    known = {d["id"] for d in schedule["dates"]}
    for index, date_id in enumerate(ids):
        if date_id not in known:
            raise InvalidInput(f"specific_dates_schedule[id][{index}] : no scheduled date {date_id}",
                               param=f"specific_dates_schedule[id][{index}]")
    left = [d for d in schedule["dates"] if d["id"] not in ids]
    return {**schedule, "dates": left} if left else None


def next_run(schedule: dict[str, Any] | None, upcoming: Upcoming) -> Run | None:
    """When the schedule runs next, and for how many terms; None once it is over."""
    if schedule is None:
        return None
    if schedule["type"] == SPECIFIC_DATES:
        first = min(schedule["dates"], key=lambda d: (d["date"], d["id"]), default=None)
        return None if first is None else Run(from_unix(first["date"]), first["terms_to_charge"], first["id"])
    if schedule["end_schedule_on"] == "after_number_of_intervals" and \
            schedule["intervals_invoiced"] >= schedule["number_of_occurrences"]:
        return None
    at = _interval_run(schedule, upcoming)
    if schedule["end_schedule_on"] == "specific_date" and at > from_unix(schedule["end_date"]):
        return None
    return Run(at, schedule["terms_to_charge"])


def after(schedule: dict[str, Any], run: Run, upcoming: Upcoming) -> dict[str, Any] | None:
    """The schedule once `run` has invoiced (its date used up, or one more interval counted);
    None once it has nothing left to run, so a finished schedule no longer holds the subscription."""
    if schedule["type"] == SPECIFIC_DATES:
        done = {**schedule, "dates": [d for d in schedule["dates"] if d["id"] != run.date_id]}
    else:
        done = {**schedule, "intervals_invoiced": schedule["intervals_invoiced"] + 1}
    return done if next_run(done, upcoming) is not None else None


def render(schedule: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Chargebee's advance_invoice_schedule objects: one per specific date, one for intervals."""
    if schedule is None:
        return []
    if schedule["type"] == SPECIFIC_DATES:
        return [{"id": d["id"], "object": "advance_invoice_schedule", "schedule_type": SPECIFIC_DATES,
                 "specific_dates_schedule": {"object": "specific_dates_schedule", "date": d["date"],
                                             "terms_to_charge": d["terms_to_charge"], "created_at": d["created_at"]}}
                for d in sorted(schedule["dates"], key=lambda d: (d["date"], d["id"]))]
    interval = {"object": "fixed_interval_schedule", "created_at": schedule["created_at"],
                **{k: schedule[k] for k in ("end_schedule_on", "number_of_occurrences", "days_before_renewal",
                                            "end_date", "terms_to_charge") if schedule.get(k) is not None}}
    return [{"id": schedule["id"], "object": "advance_invoice_schedule", "schedule_type": FIXED_INTERVALS,
             "fixed_interval_schedule": interval}]


# --- validation --------------------------------------------------------------------------------------


def _applies_only(name: str, kind: str) -> InvalidInput:
    return InvalidInput(f"{name} : applies only when schedule_type is {kind}", param=name)


def _dates(schedule: dict[str, Any], given: list[SpecificDate] | None, now: datetime,
           new_id: Callable[[], str]) -> dict[str, Any]:
    if not given:
        raise InvalidInput("specific_dates_schedule : give at least one date", param="specific_dates_schedule[date][0]")
    dates = {d["id"]: dict(d) for d in schedule["dates"]}
    for index, entry in enumerate(given):
        if entry.id is not None and entry.id not in dates:
            raise InvalidInput(f"specific_dates_schedule[id][{index}] : no scheduled date {entry.id}",
                               param=f"specific_dates_schedule[id][{index}]")
        current = dates.get(entry.id or "", {})
        date = entry.date if entry.date is not None else current.get("date")
        terms = entry.terms_to_charge if entry.terms_to_charge is not None else current.get("terms_to_charge")
        for name, value in (("date", date), ("terms_to_charge", terms)):
            if value is None:
                raise InvalidInput(f"specific_dates_schedule[{name}][{index}] : is required",
                                   param=f"specific_dates_schedule[{name}][{index}]")
        assert date is not None and terms is not None  # checked just above
        if from_unix(date) <= now:
            raise InvalidInput(f"specific_dates_schedule[date][{index}] : must be in the future",
                               param=f"specific_dates_schedule[date][{index}]")
        date_id = entry.id or new_id()
        dates[date_id] = {"id": date_id, "date": date, "terms_to_charge": terms,
                          "created_at": current.get("created_at", unix(now))}
    if len(dates) > MAX_DATES:
        raise InvalidInput(f"specific_dates_schedule : at most {MAX_DATES} dates can be scheduled",
                           param="specific_dates_schedule[date][0]")
    if len({d["date"] for d in dates.values()}) != len(dates):
        raise InvalidInput("specific_dates_schedule[date] : each date can be scheduled once",
                           param="specific_dates_schedule[date][0]")
    return {**schedule, "dates": list(dates.values())}


def _intervals(schedule: dict[str, Any], given: FixedInterval, now: datetime, upcoming: Upcoming) -> dict[str, Any]:
    for name in ("days_before_renewal", "number_of_occurrences", "end_date"):
        value = getattr(given, name)
        if value is not None:
            schedule[name] = value
    end = schedule["end_schedule_on"]
    for name, needed_by in (("number_of_occurrences", "after_number_of_intervals"), ("end_date", "specific_date")):
        if end == needed_by and schedule.get(name) is None:
            raise InvalidInput(f"fixed_interval_schedule[{name}] : is required when end_schedule_on is {needed_by}",
                               param=f"fixed_interval_schedule[{name}]")
        if end != needed_by:
            if getattr(given, name) is not None:
                raise InvalidInput(f"fixed_interval_schedule[{name}] : applies only when end_schedule_on is "
                                   f"{needed_by}", param=f"fixed_interval_schedule[{name}]")
            schedule.pop(name, None)
    days = schedule.get("days_before_renewal")
    if days is None:
        raise InvalidInput("fixed_interval_schedule[days_before_renewal] : is required",
                           param="fixed_interval_schedule[days_before_renewal]")
    # Shorter than every term, so each interval's invoice falls after the renewal before it.
    shortest = min(upcoming(k + 1) - upcoming(k) for k in range(12))
    if timedelta(days=days) >= shortest:
        raise InvalidInput(f"fixed_interval_schedule[days_before_renewal] : must be shorter than a billing term "
                           f"({shortest.days} days)", param="fixed_interval_schedule[days_before_renewal]")
    if end == "specific_date" and from_unix(schedule["end_date"]) <= now:
        raise InvalidInput("fixed_interval_schedule[end_date] : must be in the future",
                           param="fixed_interval_schedule[end_date]")
    return schedule


def _interval_run(schedule: dict[str, Any], upcoming: Upcoming) -> datetime:
    """The next interval starts at the first renewal not yet invoiced whose invoice date,
    `days_before_renewal` before it, is not before the schedule was set."""
    lead = timedelta(days=schedule["days_before_renewal"])
    since = from_unix(schedule["created_at"])
    k = 0
    while upcoming(k) - lead < since:
        k += 1
    return upcoming(k) - lead
