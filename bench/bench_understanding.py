"""Throughput of understanding without an LLM: parses per second on a mixed set of utterances.

Run:  /work/venv/bin/python bench/bench_understanding.py [--seconds 2]

Each pass runs every case once; the normalisation cache is cleared between passes so repeated
passes do not flatter the figures (within a pass several parsers share one cleaned utterance,
as in the engine). Also reports the cold import time of the package (dateparser must not be
imported until an unusual date needs it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from flowagent.understanding import corrections, extract, intents, normalise, slots, yes_no
from flowagent.understanding.types import SlotSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The intent precision table (96 positives, 96 negatives; flows/removals.yaml's intents).
from tests.understanding import test_intent_precision as _table

TODAY = date(2026, 11, 23)
WANTED: dict[str, Any] = {
    "name": {"type": "name"},
    "from_postcode": {"type": "uk_postcode"},
    "to_postcode": {"type": "uk_postcode"},
    "move_date": {"type": "date"},
    "bedrooms": {"type": "integer", "min": 1, "max": 10},
}
# The engine compiles slot specs once per flow; so does the benchmark.
SPECS = {name: SlotSpec.coerce(raw) for name, raw in WANTED.items()}
FILLED = {"name": "Sarah Jones", "from_postcode": "LS11 5AB", "to_postcode": "M1 1AA",
          "move_date": "2026-12-14", "bedrooms": 3}
MATCHER = intents.IntentMatcher({
    "quote": ["I'd like a quote", "how much to move a house", "price for a removal"],
    "existing_booking": ["I've already booked", "about my booking", "change my move date"],
})

SLOT_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("integer", "three bedrooms", WANTED["bedrooms"]),
    ("integer", "it's a four-bed", WANTED["bedrooms"]),
    ("integer", "I don't know", WANTED["bedrooms"]),
    ("date", "next Friday", {}),
    ("date", "the 3rd of March", {}),
    ("date", "the day after tomorrow", {}),
    ("date", "erm, the 14th I think", {}),
    ("time", "half past two", {}),
    ("time", "tomorrow afternoon", {}),
    ("uk_postcode", "L S one one, five A B", {}),
    ("uk_postcode", "it's M1 1AA", {}),
    ("phone", "oh seven nine one one, one two three four five six", {}),
    ("email", "john dot smith at gmail dot com", {}),
    ("name", "my name is Sarah Jones", {}),
    ("money", "four hundred and fifty pounds", {}),
    ("yes_no", "yeah that's right", {}),
    ("choice", "it's a flat", {"choices": {"small": ["flat", "studio"], "large": ["house"]}}),
]
EXTRACT_CASES = [
    ("a three-bed in LS11 5AB to M1 1AA on the 14th", None),
    ("hi my name is Sarah Jones and I'm moving a 4 bedroom house next friday", "name"),
    ("three", "bedrooms"),
    ("LS11 5AB", "from_postcode"),
]
INTENT_CASES = ["I'd like a quote", "how much would it cost to move my house",
                "can I speak to a real person", "say that again", "the weather is nice"]
YES_NO_CASES = ["yes please", "nope", "I don't think so", "not sure"]
CORRECTION_CASES = ["no, I said the 15th", "actually it's LS12 not LS11", "sorry, four bedrooms"]


def _ops() -> dict[str, list[Callable[[], object]]]:
    return {
        "parse_slot": [
            (lambda s=s, x=x: slots.parse_slot(s, x, today=TODAY))
            for s, x in [(SlotSpec.coerce({**o, "type": t}), x) for t, x, o in SLOT_CASES]
        ],
        "extract_slots": [
            (lambda x=x, c=c: extract.extract_slots(x, SPECS, current=c, today=TODAY))
            for x, c in EXTRACT_CASES
        ],
        "intent match": [(lambda x=x: MATCHER.match(x)) for x in INTENT_CASES],
        "yes_no": [(lambda x=x: yes_no.parse_yes_no(x)) for x in YES_NO_CASES],
        "corrections": [
            (lambda x=x: corrections.find_corrections(x, SPECS, FILLED, today=TODAY))
            for x in CORRECTION_CASES
        ],
    }


def _table_ops() -> dict[str, list[Callable[[], object]]]:
    """Intent matching on the whole precision table: against every intent (a greeting), and
    against the handler intents only (what a collect state asks on every answer)."""
    m = intents.IntentMatcher(_table.INTENTS)
    texts = [t for t, _ in _table.POSITIVES + _table.NEGATIVES] + _table.HANDLER_NEGATIVES
    return {
        "intents, table": [(lambda x=x: m.match(x)) for x in texts],
        "handlers, table": [(lambda x=x: m.match(x, _table.HANDLERS)) for x in texts],
    }


def _rate(fns: list[Callable[[], object]], seconds: float) -> float:
    for f in fns:  # warm up (regex compilation, caches of compiled choices)
        f()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        normalise.clean.cache_clear()
        for f in fns:
            f()
        n += len(fns)
    return n / (time.perf_counter() - start)


def _import_time() -> tuple[float, bool]:
    code = (
        "import time,sys; s=time.perf_counter(); "
        "import flowagent.understanding.slots, flowagent.understanding.extract, "
        "flowagent.understanding.intents, flowagent.understanding.corrections; "
        "print(time.perf_counter()-s, 'dateparser' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    secs, loaded = out.stdout.split()
    return float(secs), loaded == "True"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0, help="time per operation kind")
    args = ap.parse_args()
    secs, dp = _import_time()
    print(f"cold import of the understanding package: {secs * 1000:.0f} ms "
          f"(dateparser imported: {dp})")
    ops = _ops()
    every: list[Callable[[], object]] = [f for fns in ops.values() for f in fns]
    print(f"{'operation':<16} {'cases':>5} {'per second':>12} {'mean us':>9}")
    for name, fns in ops.items():
        r = _rate(fns, args.seconds)
        print(f"{name:<16} {len(fns):>5} {r:>12,.0f} {1e6 / r:>9.0f}")
    r = _rate(every, args.seconds)
    print(f"{'mixed (all)':<16} {len(every):>5} {r:>12,.0f} {1e6 / r:>9.0f}")
    for name, fns in _table_ops().items():
        r = _rate(fns, args.seconds)
        print(f"{name:<16} {len(fns):>5} {r:>12,.0f} {1e6 / r:>9.0f}")


if __name__ == "__main__":
    main()
