"""Format 2 keys need `flowagent: 2`: a format-1 file keeps its old meaning exactly, so a key it
cannot have is one clear error at that key (not a cascade of unknown names)."""

from __future__ import annotations

from flowagent.flow.checks.context import CheckContext

TOP_KEYS = ("vars", "timezone", "hours", "params")
STATE_KEYS = ("set", "clear", "repeat", "subflow", "with", "return")
HANDLER_KEYS = ("set", "clear")
SLOT_KEYS = ("list", "valid_when", "choices_from", "choice_label", "length")


def check_version(ctx: CheckContext) -> None:
    if ctx.data.get("flowagent") != 1:
        return
    for key in TOP_KEYS:
        if key in ctx.data:
            _needs(ctx, (key,), key)
    state_keys = frozenset(STATE_KEYS)
    for name, state in ctx.items("states"):
        if not state_keys.isdisjoint(state):
            for key in STATE_KEYS:
                if key in state:
                    _needs(ctx, ("states", name, key), key)
        handlers = state.get("handlers")
        for i, h in enumerate(handlers if isinstance(handlers, list) else []):
            for key in HANDLER_KEYS:
                if isinstance(h, dict) and key in h:
                    _needs(ctx, ("states", name, "handlers", i, key), key)
    for i, h in enumerate(ctx.listing("handlers")):
        for key in HANDLER_KEYS:
            if isinstance(h, dict) and key in h:
                _needs(ctx, ("handlers", i, key), key)
    slot_keys = frozenset(SLOT_KEYS)
    for name, slot in ctx.items("slots"):
        if not slot_keys.isdisjoint(slot):
            for key in SLOT_KEYS:
                if key in slot:
                    _needs(ctx, ("slots", name, key), key)
        if slot.get("type") == "digits":
            ctx.error("needs-format-two", ("slots", name, "type"),
                      f"Slot `{name}` is a `digits` slot, which is part of flow format 2, but "
                      "this file says `flowagent: 1`.",
                      "Change `flowagent: 1` to `flowagent: 2` at the top of the file.")


def _needs(ctx: CheckContext, path: tuple[str | int, ...], key: str) -> None:
    ctx.error("needs-format-two", path,
              f"`{key}` is part of flow format 2, but this file says `flowagent: 1`.",
              "Change `flowagent: 1` to `flowagent: 2` at the top of the file.", key=True)
