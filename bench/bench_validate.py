"""Benchmark: whole-process wall time of `flowagent validate` (goals: < 0.5 s per run on a
500-state flow; linear in the flow's size: 10,000 states < 1 s, a 5 MB flow < 2 s).

Measures the command exactly as a flow author runs it — a fresh process each time, start-up
included — on flows/removals.yaml and on a generated 500-state flow, and splits the time into
interpreter start-up, the CLI framework import, and our own work, so a regression is easy to
place. Then the scaling rows: generated flows of 1,000 to 10,000 states (a mixed flow with
every kind of state, and a plain chain of `say` states, the shape that exposed a quadratic
loop), a 5 MB flow (10,000 states whose prompts are paragraphs, as a big real flow's are) and
a dense 4 MB flow of 50,000 short states. Writes bench/results/validation.md.

    .venv/bin/python bench/bench_validate.py [--runs 15] [--scale-runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMOVALS = ROOT / "flows" / "removals.yaml"
RESULTS = ROOT / "bench" / "results" / "validation.md"


#: a prompt as long as a real one that explains something (about 520 characters)
PARAGRAPH = (
    "Thanks for bearing with me. Before we go on I need to check a couple of details, because "
    "the price depends on how far the van travels, how many rooms we empty and whether there "
    "are stairs or a lift at either end. None of this commits you to anything; you will hear "
    "the full price before anything is booked, and you can change your mind at any point. If "
    "you are not sure of an answer, just say so and we will work it out together later on. "
    "We keep these details only for this move, and we never pass them to anyone else at all."
)


def generate_chain(n_states: int) -> str:
    """A valid flow of `n_states` `say` states, each leading to the next: the plainest shape."""
    out = ["flowagent: 1", f"name: Chain of {n_states}", "start: s0", "states:"]
    for i in range(n_states):
        out += [f"  s{i}:", f"    say: Step {i} of the chain.",
                f"    next: s{i + 1}" if i + 1 < n_states else "    end: true"]
    return "\n".join(out) + "\n"


def generate_flow(n_states: int = 500, prose: bool = False) -> str:
    """A valid flow with `n_states` states of every kind, 100 slots, 20 tools, 10 intents;
    with `prose`, every spoken line is a paragraph (`PARAGRAPH`)."""
    extra = f" {PARAGRAPH}" if prose else ""
    n_slots, n_tools, n_intents = 100, 20, 10
    out = [
        "# yaml-language-server: $schema=../flowagent/schemas/flow.schema.json",
        "flowagent: 1", f"name: Generated {n_states}-state flow", "language: en-GB",
        "start: s0", "", "context:", "  data:", "    company: Bench Ltd", "    human: \"6001\"",
        "", "slots:",
    ]
    types = ["integer", "text", "uk_postcode", "date", "yes_no", "phone", "name", "email"]
    for i in range(n_slots):
        t = types[i % len(types)]
        out += [f"  slot{i}:", f"    type: {t}", f"    prompt: What is value number {i}?",
                f"    reprompt: Sorry, what is value {i}?"]
        if t == "integer":
            out += ["    min: 0", "    max: 100"]
    out += ["", "intents:"]
    for i in range(n_intents):
        out += [f"  intent{i}:", "    examples:",
                *[f"      - phrase {j} for intent number {i}" for j in range(5)]]
    out += ["", "tools:"]
    for i in range(n_tools):
        out += [f"  tool{i}:", "    method: POST", f"    url: \"https://api.example.com/t{i}\"",
                "    body:", f"      a: \"{{{{ slots.slot{i} }}}}\"",
                f"      b: \"{{{{ slots.slot{i + 1} }}}}\"", "    save:",
                f"      v{i}: response.value", "    on_failure: human"]
    out += ["", "handlers:", "  - intent: human", "    go: human", "  - event: no_input",
            "    go: human", "  - event: no_match", "    go: human", "", "states:"]
    for i in range(n_states):
        nxt = f"s{i + 1}" if i + 1 < n_states else "bye"
        kind = i % 5
        out.append(f"  s{i}:")
        if kind == 0:
            slot = f"slot{i % n_slots}"
            out += [f"    say: Step {i} for {{{{ context.company }}}}, {{{{ slots.{slot} }}}}."
                    f"{extra}",
                    f"    next: {nxt}"]
        elif kind == 1:
            out += [f"    ask: Question {i}?{extra}", "    next:",
                    f"      - intent: intent{i % n_intents}", f"        go: {nxt}",
                    f"      - when: slots.slot{i % n_slots} == 3", f"        go: {nxt}",
                    f"      - go: {nxt}"]
        elif kind == 2:
            out += [f"    collect: [slot{i % n_slots}, slot{(i + 1) % n_slots}]",
                    f"    next: {nxt}"]
        elif kind == 3:
            out += [f"    say: One moment.{extra}", f"    call: tool{i % n_tools}",
                    f"    next: {nxt}"]
        else:
            out += [f"    say: Saved {{{{ vars.v{i % n_tools} }}}}.{extra}", f"    next: {nxt}"]
    out += ["  human:", "    transfer: \"{{ context.human }}\"", "  bye:", "    say: Goodbye.",
            "    end: true", ""]
    return "\n".join(out)


def command() -> list[str]:
    exe = shutil.which("flowagent", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "flowagent.cli"]


def wall(cmd: list[str], runs: int) -> tuple[float, float, float, int]:
    """(median wall, best wall, median CPU user+sys, exit code). CPU time is the steadier
    figure on a shared machine: it does not grow when other processes hold the cores."""
    times, cpu = [], []
    rc = 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        rc = p.returncode
    return statistics.median(times), min(times), statistics.median(cpu), rc


SCALING = (
    ("mixed flow, 1,000 states", lambda: generate_flow(1000)),
    ("mixed flow, 4,000 states", lambda: generate_flow(4000)),
    ("mixed flow, 10,000 states", lambda: generate_flow(10000)),
    ("chain of `say` states, 1,000", lambda: generate_chain(1000)),
    ("chain of `say` states, 4,000", lambda: generate_chain(4000)),
    ("chain of `say` states, 10,000", lambda: generate_chain(10000)),
    ("5 MB flow (10,000 states, paragraph prompts)", lambda: generate_flow(10000, prose=True)),
    ("dense 4 MB flow (50,000 short states)", lambda: generate_flow(50000)),
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--scale-runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "generated_500.yaml"
        big.write_text(generate_flow(500), encoding="utf-8")
        cli = command()
        py = [sys.executable]
        rows = [
            ("python start-up only (`python -c pass`)", [*py, "-c", "pass"]),
            ("import typer + flowagent.cli (no command)",
             [*py, "-c", "import flowagent.cli"]),
            ("validator only, removals.yaml (no CLI framework)",
             [*py, "-c", "import sys; from flowagent.commands.validate import run; "
              f"sys.exit(run([{str(REMOVALS)!r}]))"]),
            ("validator only, generated 500-state flow",
             [*py, "-c", "import sys; from flowagent.commands.validate import run; "
              f"sys.exit(run([{str(big)!r}]))"]),
            ("`flowagent validate flows/removals.yaml`", [*cli, "validate", str(REMOVALS)]),
            ("`flowagent validate generated_500.yaml`", [*cli, "validate", str(big)]),
        ]
        results = []
        for label, cmd in rows:
            med, best, cpu, rc = wall(cmd, args.runs)
            results.append((label, med, best, cpu, rc))
            print(f"{label:58s} median {med * 1000:7.1f} ms   best {best * 1000:7.1f} ms  "
                  f"cpu {cpu * 1000:7.1f} ms  rc={rc}")
        lines_500 = big.read_text().count("\n")
        scaling = []
        for label, make in SCALING:
            flow = Path(tmp) / "scaled.yaml"
            flow.write_text(make(), encoding="utf-8")
            size = flow.stat().st_size / 1e6
            med, best, cpu, rc = wall([*cli, "validate", str(flow)], args.scale_runs)
            scaling.append((label, size, med, best, cpu, rc))
            print(f"{label:58s} {size:5.2f} MB median {med:6.2f} s  best {best:6.2f} s  rc={rc}")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        before = ""
        if RESULTS.exists() and "## Before" in RESULTS.read_text(encoding="utf-8"):
            before = RESULTS.read_text(encoding="utf-8").split("## Before", 1)[1]
        md = [
            "# `flowagent validate` — whole-process wall time",
            "",
            "Goals (PRODUCT.md §7, issue 18): < 0.5 s for the whole process on a 500-state flow;",
            "linear in the flow's size: 10,000 states < 1 s, a 5 MB flow < 2 s.",
            "",
            "Command: `.venv/bin/python bench/bench_validate.py --runs "
            f"{args.runs} --scale-runs {args.scale_runs}` (a fresh process per run; median and "
            "best).",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, 1-min load average {load:.1f} while measuring "
            "(the machine was shared with other work, so medians are pessimistic).",
            f"The generated flow has 500 states, 100 slots, 20 tools, 10 intents "
            f"({lines_500} lines).",
            "",
            "| what | wall median | wall best | CPU (user+sys) median | exit |",
            "|---|---:|---:|---:|---:|",
            *[f"| {label} | {med * 1000:.0f} ms | {best * 1000:.0f} ms | {cpu * 1000:.0f} ms "
              f"| {rc} |" for label, med, best, cpu, rc in results],
            "",
            "Reading: the validator itself (parse with LibYAML, schema, references, graph, "
            "templates) is the difference between the \"validator only\" rows and Python "
            "start-up. `flowagent validate` and `flowagent schema` are dispatched by "
            "`flowagent/cli.py:_fast_path` before typer is imported (typer >= 0.29 imports "
            "pydantic on every run, ~250 ms), so the whole-process rows are close to the "
            "\"validator only\" rows; the `import typer` row shows what every other command "
            "pays at start-up.",
            "",
            "## Scaling (whole process, `flowagent validate FILE`)",
            "",
            "| flow | size | wall median | wall best | CPU median | exit |",
            "|---|---:|---:|---:|---:|---:|",
            *[f"| {label} | {size:.2f} MB | {med:.2f} s | {best:.2f} s | {cpu:.2f} s | {rc} |"
              for label, size, med, best, cpu, rc in scaling],
            "",
            "Why it is linear now: the \"can this state reach an end?\" check walks the reversed "
            "edges once (it used to re-scan every state until nothing changed: once per state "
            "on a chain), and the cyclic garbage collector is paused while the YAML tree and "
            "the checks allocate (`loader.no_cyclic_gc`; it took 60 % of the time on big "
            "flows). What is left is about 1 s per MB of dense YAML (LibYAML's composer and "
            "our position-keeping builder, ~0.5 s/MB) and the checks (~0.35 s/MB).",
            "",
        ]
        if before:
            md += ["## Before" + before.rstrip(), ""]
        RESULTS.write_text("\n".join(md), encoding="utf-8")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    ok = all(r[-1] == 0 for r in results) and all(r[-1] == 0 for r in scaling)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
