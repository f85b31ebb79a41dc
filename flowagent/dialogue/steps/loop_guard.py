"""The run-time loop guard: a flow that goes round its states without hearing the caller or
changing anything is stopped at once, by name.

Per event the engine may pass through many states (say -> call -> say...). Coming back to a
state is normal when something changed since (a counter went up, a slot was cleared); coming
back with every slot and variable as they were means the next round will be the same as this
one, for ever. The engine keeps, for the event in hand only, the states entered in order (the
trail) and which were seen — a list append and a dict look-up per state, nothing kept between
events. Only when a state is entered again does it take a snapshot of the call's data (`repr`
of slots and vars) and ask `revisit`, which compares it with that state's previous revisit.
When two match, `revisit` returns the states of the round, and where the output and the
transcript stood when the round began, so the engine can drop the repeated round's words: the
caller hears the round once, then the flow's fallback — never the same two lines fifty times.
"""

from __future__ import annotations

from dataclasses import dataclass

#: state -> (snapshot, trail index, output length, transcript length) at its last revisit
Marks = dict[str, tuple[str, int, int, int]]


@dataclass(frozen=True, slots=True)
class Loop:
    states: tuple[str, ...]  # the round, first state repeated at the end: a -> b -> a
    out_at: int  # len(output) when the round began
    said_at: int  # len(transcript) when the round began


def revisit(marks: Marks, trail: list[str], state: str, snap: str, out_len: int,
            said_len: int) -> Loop | None:
    """`state` (the last of `trail`) was entered again in this event. Returns the loop when
    this round repeats the previous one with the same data."""
    here = len(trail) - 1
    mark = marks.get(state)
    marks[state] = (snap, here, out_len, said_len)
    if mark is None or mark[0] != snap:
        return None
    _, start, out_at, said_at = mark
    return Loop(tuple(trail[start:]), out_at, said_at)
