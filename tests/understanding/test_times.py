"""Times of day as callers say them."""

from __future__ import annotations

import pytest

from flowagent.understanding.times import parse_time

TIMES = [
    ("2pm", "14:00"), ("2 pm", "14:00"), ("2 p.m.", "14:00"), ("11am", "11:00"),
    ("11 a.m.", "11:00"), ("12pm", "12:00"), ("12am", "00:00"), ("14:30", "14:30"),
    ("2:30", "14:30"), ("2:30 pm", "14:30"), ("9:15", "09:15"), ("9.15", "09:15"),
    ("half past two", "14:30"), ("half past ten", "10:30"), ("quarter past three", "15:15"),
    ("a quarter past nine", "09:15"), ("quarter to five", "16:45"),
    ("a quarter to twelve", "11:45"), ("ten past four", "16:10"), ("twenty to six", "17:40"),
    ("five to nine", "08:55"), ("twenty five past eleven", "11:25"), ("half two", "14:30"),
    ("five o'clock", "17:00"), ("five oclock", "17:00"), ("nine o'clock", "09:00"),
    ("ten fifteen", "10:15"), ("two thirty", "14:30"), ("eleven forty five", "11:45"),
    ("nine oh five", "09:05"), ("noon", "12:00"), ("midday", "12:00"), ("midnight", "00:00"),
    ("nine in the morning", "09:00"), ("two in the afternoon", "14:00"),
    ("seven in the evening", "19:00"), ("eight at night", "20:00"), ("at 3", "15:00"),
    ("at three", "15:00"), ("about 10", "10:00"), ("around eleven", "11:00"),
    ("three", "15:00"), ("8", "08:00"), ("morning", "09:00"), ("in the morning", "09:00"),
    ("afternoon", "14:00"), ("tomorrow afternoon", "14:00"), ("the evening", "18:00"),
    ("lunchtime", "12:00"), ("first thing", "09:00"), ("tonight", "18:00"),
    ("tomorrow at half past two", "14:30"), ("Friday morning at 10", "10:00"),
    ("can you come at 9am", "09:00"), ("18:45", "18:45"), ("2.30pm", "14:30"),
    ("2:30 p.m.", "14:30"), ("Half two.", "14:30"), ("10.45am", "10:45"),
]


@pytest.mark.parametrize(("text", "expected"), TIMES)
def test_times(text: str, expected: str) -> None:
    got = parse_time(text)
    assert got is not None, text
    assert got.value == expected


NOT_TIMES = ["I don't know", "three bedrooms", "for two people", "yes", "LS11 5AB", "",
             "whenever suits", "25:00", "two weeks"]


@pytest.mark.parametrize("text", NOT_TIMES)
def test_not_times(text: str) -> None:
    assert parse_time(text) is None
