"""What the writer's integrity guard costs: guarded writes vs the statement it replaced.

    python benchmarks/bench_writer_guard.py [--sequences 4096] [--tokens 20] [--rounds 3]

Guarded (what hsg runs): per transaction, CHECK_DICTIONARY proves the SAE's Feature nodes
are exactly 0..d_sae-1, then WRITE_ACTIVATIONS writes and returns the sequences it marked.
Baseline: the same statement (ACTIVATES and HAS_FEATURE by list position), unchecked and
returning nothing.
Both write the same synthetic activations into a throw-away server, alternating rounds;
the ratio is of the medians.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import bench_database, wipe  # noqa: E402

from hsg.db.schema import apply_schema  # noqa: E402
from hsg.graph import statements as q  # noqa: E402
from hsg.graph.node_labels import LABEL_PREFIX  # noqa: E402
from hsg.graph.writer import GraphWriter, SequenceWrite  # noqa: E402

# The statement hsg runs without what guards it: no dictionary proof before it and nothing
# returned (so nothing for the writer to count). Both sides write HAS_FEATURE beside the
# ACTIVATES (issue #17), so the ratio is the guard's cost alone.
UNGUARDED = q.WRITE_ACTIVATIONS.split("\nRETURN ")[0]
assert "RETURN count(s)" not in UNGUARDED and "HAS_FEATURE" in UNGUARDED


def writes(n: int, tokens: int, d_sae: int, tag: str) -> list[SequenceWrite]:
    rng = random.Random(0)
    return [
        SequenceWrite(
            f"{tag}{i}",
            {"length": 100},
            ["x"],
            [[rng.randrange(d_sae), p, "ACGTAC", rng.random(), 0] for p in range(tokens)],
        )
        for i in range(n)
    ]


def one_round(driver, db, guarded: bool, items, d_sae: int, size: int) -> float:
    wipe(driver, db)
    apply_schema(driver, db)
    writer = GraphWriter(driver, db, "bench/sae", "run")
    writer.register({"id": "bench"}, {"id": "bench/sae", "layer": 1}, d_sae, {"id": "r"})
    if not guarded:
        writer._check_dictionary = lambda tx: None  # noqa: SLF001

    def write(batch):
        if guarded:
            return writer.write_batch(batch)
        rows = [{"id": s.id, "props": s.props, "labels": s.labels} for s in batch]
        acts = [{"id": s.id, "acts": s.activations} for s in batch]

        def work(tx):
            tx.run(q.MERGE_SEQUENCES, rows=rows, label_prefix=LABEL_PREFIX).consume()
            tx.run(UNGUARDED, rows=acts, sae_id="bench/sae", run_id="run").consume()

        with driver.session(database=db) as session:
            session.execute_write(work)

    for i in range(0, 1024, size):  # warm-up: compiled plans, warm page cache
        write([SequenceWrite("w" + w.id, w.props, w.labels, w.activations)
               for w in items[i : i + size]])  # fmt: skip
    start = time.perf_counter()
    for i in range(0, len(items), size):
        write(items[i : i + size])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    items = writes(args.sequences, args.tokens, args.d_sae, "s")
    rels = args.sequences * args.tokens
    times: dict[bool, list[float]] = {True: [], False: []}
    with bench_database() as (driver, settings):
        for r in range(args.rounds):
            for guarded in (False, True) if r % 2 == 0 else (True, False):
                t = one_round(driver, settings.database, guarded, items, args.d_sae, args.batch)
                times[guarded].append(t)
                name = "guarded  " if guarded else "baseline "
                print(f"  round {r + 1} {name}: {rels / t:10,.0f} ACTIVATES/s")
    g, b = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"{args.sequences} sequences x {args.tokens} activations, d_sae {args.d_sae}, "
        f"{args.batch}/tx: guarded {rels / g:,.0f}/s, baseline {rels / b:,.0f}/s, "
        f"guarded ÷ baseline time = {g / b:.2f}"
    )


if __name__ == "__main__":
    main()
