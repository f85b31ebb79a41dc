"""Flow format 2: opening hours with a time zone and public holidays (a fixed clock decides),
`now` as a record, codes said or keyed digit by digit, and the `say_digits` / `say_time`
filters."""

from __future__ import annotations

import datetime as _dt

import pytest
from engine_helpers import flow_from_yaml

from flowagent.dialogue.events import CallInfo
from flowagent.dialogue.text_driver import Conversation
from flowagent.dialogue.tools import CannedTools
from flowagent.flow.hours import HoursError, parse_schedule
from flowagent.flow.spoken import say_digits, say_time

CALL = CallInfo(uuid="time", caller="+447700900123")
UTC = _dt.UTC

HOURS = """
    flowagent: 2
    name: hours
    language: en-GB
    timezone: Europe/London
    hours:
      office:
        monday to friday: 08:00-18:00
        saturday: [09:00-12:30]
        closed: [public holidays, 2026-12-24]
    start: greet
    states:
      greet:
        say: "It is {{ now.time }} on {{ now.weekday }}."
        next:
          - when: hours.office
            go: open
          - go: closed
      open:
        say: We're open.
        end: true
      closed:
        say: We're closed.
        end: true
"""


async def said_at(moment: _dt.datetime) -> list[str]:
    conv = Conversation(flow_from_yaml(HOURS), CannedTools({}), now=moment)
    return await conv.start(CALL)


@pytest.mark.parametrize(("moment", "want"), [
    # 2026-03-02 is a Monday; London is on GMT (UTC+0) in March
    (_dt.datetime(2026, 3, 2, 10, 0, tzinfo=UTC), ["It is 10:00 on monday.", "We're open."]),
    (_dt.datetime(2026, 3, 2, 18, 0, tzinfo=UTC), ["It is 18:00 on monday.", "We're closed."]),
    (_dt.datetime(2026, 3, 7, 12, 29, tzinfo=UTC), ["It is 12:29 on saturday.", "We're open."]),
    (_dt.datetime(2026, 3, 8, 11, 0, tzinfo=UTC), ["It is 11:00 on sunday.", "We're closed."]),
    # in June London is UTC+1: 06:30 UTC is 07:30 there, before opening; 07:30 UTC is 08:30
    (_dt.datetime(2026, 6, 1, 6, 30, tzinfo=UTC), ["It is 07:30 on monday.", "We're closed."]),
    (_dt.datetime(2026, 6, 1, 7, 30, tzinfo=UTC), ["It is 08:30 on monday.", "We're open."]),
    # Easter Monday (a bank holiday in England) and a date the schedule lists
    (_dt.datetime(2026, 4, 6, 10, 0, tzinfo=UTC), ["It is 11:00 on monday.", "We're closed."]),
    (_dt.datetime(2026, 12, 24, 10, 0, tzinfo=UTC), ["It is 10:00 on thursday.",
                                                     "We're closed."]),
])
async def test_opening_hours_follow_the_flows_time_zone_and_holidays(
        moment: _dt.datetime, want: list[str]) -> None:
    assert await said_at(moment) == want


def test_a_schedule_that_cannot_be_read_says_why() -> None:
    with pytest.raises(HoursError, match="not a day"):
        parse_schedule({"mondays to fridays": "08:00-18:00"})
    with pytest.raises(HoursError, match="closes before it opens"):
        parse_schedule({"monday": "18:00-08:00"})
    with pytest.raises(HoursError, match="not opening times"):
        parse_schedule({"monday": "8am to 6pm"})
    with pytest.raises(HoursError, match="GB-XYZ"):
        parse_schedule({"closed": ["public holidays in GB-XYZ"]})
    scot = parse_schedule({"every day": "00:00-24:00", "closed": ["public holidays in GB-SCT"]})
    # the 2nd of January is a bank holiday in Scotland only
    assert not scot.is_open(_dt.datetime(2026, 1, 2, 12, 0))
    eng = parse_schedule({"every day": "00:00-24:00", "closed": ["public holidays"]}, "GB")
    assert eng.is_open(_dt.datetime(2026, 1, 2, 12, 0))


STAFF = """
    flowagent: 2
    name: staff
    start: ask
    slots:
      staff_id:
        type: digits
        length: 6
        dtmf: true
        prompt: Please say or key your six-digit staff ID.
        confirm: true
    states:
      ask:
        collect: [staff_id]
        next: done
      done:
        say: "Thanks, {{ slots.staff_id | say_digits }}."
        end: true
"""


async def test_a_code_said_digit_by_digit_keeps_its_leading_zero() -> None:
    conv = Conversation(flow_from_yaml(STAFF), CannedTools({}))
    await conv.start(CALL)
    lines = await conv.say("oh one two, double three, four")
    assert conv.slots["staff_id"] == "012334"
    assert lines == ["I have 0 1 2, 3 3 4. Is that right?"]
    assert await conv.say("yes") == ["Thanks, 0 1 2, 3 3 4."]


async def test_a_code_keyed_on_the_phone_ends_at_its_length() -> None:
    conv = Conversation(flow_from_yaml(STAFF), CannedTools({}))
    await conv.start(CALL)
    lines = await conv.dtmf("007123")  # no # needed: six digits is the whole code
    assert conv.slots["staff_id"] == "007123"
    assert lines == ["I have 0 0 7, 1 2 3. Is that right?"]


async def test_a_code_of_the_wrong_length_is_refused_with_the_reason() -> None:
    conv = Conversation(flow_from_yaml(STAFF), CannedTools({}))
    await conv.start(CALL)
    lines = await conv.say("one two three")
    assert lines == ["Sorry, that is 3 digits, and I need 6. Please say or key your six-digit "
                     "staff ID."]
    assert conv.slots.get("staff_id") is None


@pytest.mark.parametrize(("value", "want"), [
    ("14:30", "2:30 pm"), ("11:00", "11 am"), ("12:00", "12 noon"), ("00:00", "midnight"),
    ("09:05", "9:05 am"), ("not a time", "not a time"), (None, ""),
])
def test_say_time(value: object, want: str) -> None:
    assert say_time(value) == want


@pytest.mark.parametrize(("value", "want"), [
    ("012334", "0 1 2, 3 3 4"), (7123, "7 1 2, 3"), ("AB12", "A B 1, 2"), (None, ""),
])
def test_say_digits(value: object, want: str) -> None:
    assert say_digits(value) == want
