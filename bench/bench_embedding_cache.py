"""Start-up cost of intent example embeddings: empty disk cache vs filled (a restart).

Times, in one process, what `flowagent serve` does with the offline stack before accepting
calls: load MiniLM, embed the built-in intents' examples, then each flow's examples
(`FlowSet.load` -> `EmbeddingScorer.prepare`). "cold" = empty `embeddings/` directory (what
every start did before the disk cache), "warm" = the directory the cold run filled.

    python bench/bench_embedding_cache.py flows/removals.yaml [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flowagent.flow.compiler import load_flow  # noqa: E402
from flowagent.understanding.embedding_cache import EmbeddingDiskCache  # noqa: E402
from flowagent.understanding.embeddings import EmbeddingScorer, MiniLM  # noqa: E402
from flowagent.understanding.intents import BUILTIN_INTENTS  # noqa: E402


def one_start(model: MiniLM, folder: Path, flows: list[dict[str, list[str]]]) -> float:
    started = time.perf_counter()
    scorer = EmbeddingScorer(model=model, disk=EmbeddingDiskCache(folder))
    scorer.prepare(dict(BUILTIN_INTENTS))
    for intents in flows:
        scorer.prepare(intents)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("flows", type=Path, nargs="*", default=[ROOT / "flows" / "removals.yaml"])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    flows = [{k: list(v) for k, v in load_flow(p).intents.items()} for p in args.flows]
    n = sum(len(v) for v in BUILTIN_INTENTS.values()) + sum(
        len(v) for f in flows for v in f.values())
    t0 = time.perf_counter()
    model = MiniLM()  # loaded once (serve loads it at start either way; not cached)
    load_s = time.perf_counter() - t0
    cold, warm = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as d:
            cold.append(one_start(model, Path(d), flows))
            warm.append(one_start(model, Path(d), flows))
    print(f"{n} examples; MiniLM load {load_s:.2f} s (both cases)")
    print(f"cold (embed all): {' '.join(f'{x:.3f}' for x in cold)} s, median "
          f"{statistics.median(cold):.3f} s")
    print(f"warm (from disk): {' '.join(f'{x:.3f}' for x in warm)} s, median "
          f"{statistics.median(warm):.3f} s")


if __name__ == "__main__":
    main()
