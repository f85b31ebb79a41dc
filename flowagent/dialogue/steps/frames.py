"""Sub-flows (format 2): what the engine keeps of the calling flow while a sub-flow runs.

A `subflow:` state pushes a `Frame` — the calling flow, the state to carry on from, and its
slots, variables, parameters and carried words — and switches to the sub-flow with fresh slots,
its own starting `vars` and the parameters it was given. A `return:` state pops the frame and
sets the returned values in the calling flow's `vars`; then the calling state's `next` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from flowagent.flow.compiler import REQUIRED, CompiledFlow


@dataclass(frozen=True, slots=True)
class Frame:
    flow: CompiledFlow
    state: str  # the calling `subflow:` state
    slots: dict[str, Any]
    vars: dict[str, Any]
    params: dict[str, Any]  # the calling flow's own parameters (a copy)
    carry: list[tuple[str, tuple[tuple[int, int], ...]]]
    label: str  # how the sub-flow's states are named in the record: "verify_caller"

    def copied(self) -> Frame:
        """An independent copy (for `Engine.fork`)."""
        return replace(self, slots=dict(self.slots), vars=dict(self.vars),
                       params=dict(self.params), carry=list(self.carry))


def parameters(sub: CompiledFlow, given: Mapping[str, Any]) -> dict[str, Any]:
    """The sub-flow's `params`: what the calling state gave, else each default. A parameter
    with neither is None (the validator reports it as `missing-param`)."""
    out: dict[str, Any] = {}
    for name, default in sub.params.items():
        if name in given:
            out[name] = given[name]
        elif default is not REQUIRED:
            out[name] = _thaw(default)
        else:
            out[name] = None
    return out


def label_of(written: str) -> str:
    """`parts/verify_caller.yaml` -> `verify_caller`."""
    name = written.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
