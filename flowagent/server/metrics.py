"""Prometheus metrics, with the text exposition written by hand (it is a tiny format).

Why not prometheus_client: one more dependency for counters, gauges and fixed-bucket histograms
that fit in this file. Everything is updated from the event loop thread only, so no locks.
"""

from __future__ import annotations

import bisect
import sys
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowagent.server.call_garbage import GcStats

#: latency buckets in seconds (phone-call scale: a few ms to several seconds)
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out = []
        acc = 0
        sep = "," if labels else ""
        for le, c in zip(self.buckets, self.counts, strict=True):
            acc += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {acc}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum:.6f}")
        out.append(f"{name}_count{lab} {self.count}")
        return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """The process's metrics. `render()` is the body of `GET /metrics`."""

    def __init__(self) -> None:
        self.active_calls = 0
        self.calls_total = 0
        self.turns_total = 0
        self.barge_ins_total = 0
        self.errors: dict[str, int] = defaultdict(int)  # kind -> count
        self.outcomes: dict[str, int] = defaultdict(int)
        #: stage -> histogram; stages: runner (end of turn -> first frame), asr, llm_first_token,
        #: tts_first_audio, turn (end of speech -> first frame)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.player_lateness = Histogram((0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))
        self.frames_sent = 0
        self.frames_received = 0
        self.underruns = 0
        #: the record writer (server/record_writer.py): call records queued and not yet
        #: written, webhook events queued for the outbox, transactions, rows, failed writes
        self.store_queue = 0
        self.store_events_queue = 0
        self.store_writes = 0
        self.store_rows = 0
        self.store_write_failures = 0
        #: the webhook outbox: events delivered, retried, given up
        self.webhooks_delivered = 0
        self.webhooks_retried = 0
        self.webhooks_given_up = 0
        #: this node's id (serve --node-id): every sample carries it as a `node` label
        self.node = ""
        #: the collections that free ended calls (server/call_garbage.py), set by the runtime
        self.gc: GcStats | None = None

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def render(self) -> str:
        lines: list[str] = []

        def simple(name: str, kind: str, help_: str, value: float) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"])

        simple("flowagent_active_calls", "gauge", "Calls in progress.", self.active_calls)
        simple("flowagent_calls_total", "counter", "Calls accepted.", self.calls_total)
        simple("flowagent_turns_total", "counter", "Caller turns handled.", self.turns_total)
        simple("flowagent_barge_ins_total", "counter", "Caller interruptions.",
               self.barge_ins_total)
        simple("flowagent_frames_sent_total", "counter", "Audio frames sent.", self.frames_sent)
        simple("flowagent_frames_received_total", "counter", "Audio frames received.",
               self.frames_received)
        simple("flowagent_underruns_total", "counter",
               "Frames sent as silence while audio was still being made.", self.underruns)
        simple("flowagent_store_queue", "gauge",
               "Call records waiting to be written to the store (> 0 for long: the database"
               " is failing; they are retried).", self.store_queue)
        simple("flowagent_store_events_queue", "gauge",
               "Webhook events waiting to be written to the outbox.", self.store_events_queue)
        simple("flowagent_store_writes_total", "counter", "Store transactions written.",
               self.store_writes)
        simple("flowagent_store_rows_total", "counter", "Call record rows written.",
               self.store_rows)
        simple("flowagent_store_write_failures_total", "counter",
               "Store writes that failed (and were retried).", self.store_write_failures)
        simple("flowagent_webhooks_delivered_total", "counter", "Webhook events delivered.",
               self.webhooks_delivered)
        simple("flowagent_webhooks_retried_total", "counter",
               "Webhook deliveries that failed and were scheduled again.", self.webhooks_retried)
        simple("flowagent_webhooks_given_up_total", "counter",
               "Webhook events given up (rejected by the receiver or out of attempts).",
               self.webhooks_given_up)
        if self.gc is not None:
            simple("flowagent_gc_collections_total", "counter",
                   "Full garbage collections run to free ended calls.", self.gc.collections)
            simple("flowagent_gc_pause_seconds_total", "counter",
                   "Time the event loop spent in those collections.", self.gc.pause_total_s)
            simple("flowagent_gc_pause_seconds_max", "gauge",
                   "The longest of those collections.", self.gc.pause_max_s)
        lines += ["# HELP flowagent_errors_total Errors by kind.",
                  "# TYPE flowagent_errors_total counter"]
        for kind, n in sorted(self.errors.items()):
            lines.append(f'flowagent_errors_total{{kind="{_esc(kind)}"}} {n}')
        lines += ["# HELP flowagent_call_outcomes_total Finished calls by outcome.",
                  "# TYPE flowagent_call_outcomes_total counter"]
        for outcome, n in sorted(self.outcomes.items()):
            lines.append(f'flowagent_call_outcomes_total{{outcome="{_esc(outcome)}"}} {n}')
        lines += ["# HELP flowagent_latency_seconds Per-turn latency by stage.",
                  "# TYPE flowagent_latency_seconds histogram"]
        for stage, h in sorted(self.latency.items()):
            lines += h.lines("flowagent_latency_seconds", f'stage="{_esc(stage)}"')
        lines += ["# HELP flowagent_player_lateness_seconds Pacing clock wake-up lateness.",
                  "# TYPE flowagent_player_lateness_seconds histogram"]
        lines += self.player_lateness.lines("flowagent_player_lateness_seconds")
        # the Silero VAD's windows, if it is in use (never imported here just to say 0)
        silero = sys.modules.get("flowagent.providers.local.silero")
        if silero is not None:
            lines += ["# HELP flowagent_vad_windows_total Silero VAD windows: run by the model, "
                      "answered by the silence gate, or shed because the model was too far "
                      "behind (shed > 0: the VAD cannot keep up with this many calls).",
                      "# TYPE flowagent_vad_windows_total counter"]
            for result, n in silero.window_counts().items():
                lines.append(f'flowagent_vad_windows_total{{result="{result}"}} {n}')
        if self.node:
            lines = [_with_node(line, self.node) for line in lines]
        return "\n".join(lines) + "\n"


def _with_node(line: str, node: str) -> str:
    """A sample line with a `node` label added (comment lines unchanged)."""
    if line.startswith("#"):
        return line
    label = f'node="{_esc(node)}"'
    name, sep, rest = line.partition("{")
    if sep:
        return f"{name}{{{label},{rest}"
    name, _, value = line.partition(" ")
    return f"{name}{{{label}}} {value}"
