"""The run-time loop guard: a flow that goes round its states without hearing the caller or
changing anything is stopped at once, by name.

Per event the engine may pass through many states (say -> call -> say...). Coming back to a
state is normal when something changed since (a counter went up, a slot was cleared); coming
back with every slot and variable as they were means the next round will be the same as this
one, for ever. The guard costs one dict look-up per state entered; only when a state is entered
again in the same event does it take a snapshot of the call's data (`repr` of slots and vars),
and it compares the snapshots of that state's later visits. When two match, `check` returns the
states of the round, and where the output and the transcript stood when the round began, so the
engine can drop the repeated round's words: the caller hears the round once, then the flow's
fallback — never the same two lines fifty times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Loop:
    states: tuple[str, ...]  # the round, first state repeated at the end: a -> b -> a
    out_at: int  # len(output) when the round began
    said_at: int  # len(transcript) when the round began


@dataclass
class LoopGuard:
    visits: dict[str, int] = field(default_factory=dict)
    trail: list[str] = field(default_factory=list)
    #: state -> (snapshot, trail index, output length, transcript length) at its last revisit
    marks: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)

    def reset(self) -> None:
        if self.trail:
            self.visits.clear()
            self.trail.clear()
            self.marks.clear()

    def check(self, state: str, snapshot: Callable[[], str], out_len: int,
              said_len: int) -> Loop | None:
        """Call on entering `state`. Returns the loop when this round repeats the last one."""
        seen = self.visits.get(state, 0)
        self.visits[state] = seen + 1
        self.trail.append(state)
        if seen == 0:
            return None
        snap = snapshot()
        here = len(self.trail) - 1
        mark = self.marks.get(state)
        self.marks[state] = (snap, here, out_len, said_len)
        if mark is None or mark[0] != snap:
            return None
        _, start, out_at, said_at = mark
        return Loop(tuple(self.trail[start:]), out_at, said_at)
