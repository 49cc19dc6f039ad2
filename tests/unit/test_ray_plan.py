"""The Ray engine's plan without Ray: the driver streams the input into per-shard files and,
for BED, leaves the bases to the tasks — which must rebuild exactly the records the
sequential reader yields (windows too) and refuse a bad input with the reader's message.

The "engine" below is the engine's own pieces run in one process: `_plan` (the driver's
pass), `check_shard` (what each Ray task runs) and `FirstProblem` (how the driver picks the
problem among the tasks' answers, which arrive in any order)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from lookup_inputs import BED, bed_file, genome, reader_error  # noqa: E402

from hsg import api  # noqa: E402
from hsg.ingest.ray_engine import _plan  # noqa: E402
from hsg.ingest.shard_plan import (  # noqa: E402
    FirstProblem,
    LookupInput,
    Plan,
    check_shard,
    lookup_repeats,
    read_rows,
    record_rows,
)
from hsg.regions.lookup import lookup_record, lookup_rows, open_reference  # noqa: E402
from hsg.regions.readers import read_bed_regions  # noqa: E402
from hsg.regions.records import InputError, SequenceRecord  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    model = api.make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", "v2", seed=1)
    return api.load_encoder(model, device="cpu").tokenizer


def looked_up(bed: Path, ref: Path, **opts) -> list[SequenceRecord]:
    window, stride = opts.pop("window", None), opts.pop("stride", None)
    regions = read_bed_regions(bed, ref, **opts)
    fasta = open_reference(regions.reference, regions.index)
    try:
        return [lookup_record(row, fasta) for row in lookup_rows(regions.regions, window, stride)]
    finally:
        fasta.close()


@pytest.mark.parametrize(
    "window", [{}, {"window": 100}, {"window": 100, "stride": 30}, {"window": 90, "stride": 170}]
)
def test_looked_up_records_are_the_readers(tmp_path, window):
    """Every record (id, coordinates, strand, bases, labels, the line it names) is the one
    `hsg ingest` reads: whole regions, windows that overlap, windows with gaps; - strands."""
    ref, bed = genome(tmp_path / "ref.fa"), bed_file(tmp_path)
    expected = api.read_regions(bed, reference=ref, label_column=6, **window)
    got = looked_up(bed, ref, label_column=6, **window)
    assert [(r, r.where) for r in got] == [(r, r.where) for r in expected]
    assert len(expected) > 6 if window else len(expected) == 6


def engine_error(tmp_path, bed, ref, tokenizer, shard_size=3, **opts) -> InputError | None:
    """What the Ray engine raises for this input (None: it would encode)."""
    window, stride = opts.pop("window", None), opts.pop("stride", None)
    regions = read_bed_regions(bed, ref, **opts)
    lookup = LookupInput(lookup_rows(regions.regions, window, stride), str(ref),
                         str(regions.index))  # fmt: skip
    folder = tmp_path / f"plan{random.random()}"
    folder.mkdir()
    plan, pending = _plan(None, lookup, folder, shard_size, None)
    problems = FirstProblem(plan.shards)
    for shard in reversed(plan.shards):  # answers come in any order
        problems.add(check_shard(shard.index, shard.path, tokenizer, "tiny", str(bed),
                                 lookup.reference, lookup.index))  # fmt: skip
    assert problems.settled
    return problems.error(pending)


def test_a_bad_base_is_refused_with_the_readers_message(tmp_path, tokenizer):
    # r4 (chr1:1000-1500, -) tiled 90 every 170: windows 1410-1500, 1240-1330, 1070-1160,
    # 1000-1090 in input order (a - region's run down the genome). 1300 is in the second,
    # 1200 between the second and the third: the reader names 1200, the region's first
    # invalid base on the + strand, though 1300's window comes first
    ref = genome(tmp_path / "ref.fa", bad={"chr1": [1200, 1300]})
    bed = bed_file(tmp_path)
    for opts in ({"window": 90, "stride": 170}, {"window": 100, "stride": 80},
                 {"window": 100}, {}):  # fmt: skip
        message = reader_error(bed, ref, label_column=6, **opts)
        assert "line 5: invalid base 'R' at position 201" in message
        assert str(engine_error(tmp_path, bed, ref, tokenizer, label_column=6, **opts)) == message


def test_problems_come_in_the_readers_order(tmp_path, tokenizer):
    ref = genome(tmp_path / "ref.fa", bad={"chr2": [50]})  # in r3 (line 4)
    long_label = "x" * 4001
    lines = BED.splitlines()
    # line 4: a bad base and a label too long for an index: the reader checks bases first
    lines[3] += "," + long_label
    # line 6: a label too long; line 7: an unknown chromosome (the driver finds it)
    lines[5] = lines[5].replace("other", long_label)
    lines[6] = lines[6].replace("chr1", "chrZ")
    bed = bed_file(tmp_path, "\n".join(lines) + "\n")
    for fixed in range(3):
        message = reader_error(bed, ref, label_column=6)
        assert str(engine_error(tmp_path, bed, ref, tokenizer, label_column=6)) == message
        if fixed == 0:
            assert "line 4: invalid base 'R'" in message
            ref = genome(tmp_path / "ref.fa")  # mend the base: the label's turn
        elif fixed == 1:
            assert "line 4: label 'xxx" in message
            lines[3] = BED.splitlines()[3]
            lines[5] = BED.splitlines()[5]
            bed = bed_file(tmp_path, "\n".join(lines) + "\n")
    assert "line 7: unknown chromosome 'chrZ'" in message


def test_a_bad_strand_and_bad_windows_are_the_readers_errors(tmp_path, tokenizer):
    ref = genome(tmp_path / "ref.fa")
    bed = bed_file(tmp_path, BED.replace("\t.\t", "\tx\t"))
    message = reader_error(bed, ref, window=100)
    assert "strand must be" in message
    assert str(engine_error(tmp_path, bed, ref, tokenizer, window=100)) == message
    with pytest.raises(InputError, match="window size must be an integer >= 1"):
        lookup_rows(iter(()), 0)


def test_a_sequence_too_long_comes_after_every_reader_problem(tmp_path, tokenizer):
    """A window too long for the model is refused with the --window advice, unless the
    reader would have refused the input first (it read everything before tokenizing)."""
    ref = genome(tmp_path / "ref.fa", chr1=13000)
    long = "chr1\t0\t13000\tall\t0\t+\tbig\n"  # > 2048 tokens of the tiny NT v2
    bed = bed_file(tmp_path, BED + long)
    error = engine_error(tmp_path, bed, ref, tokenizer)
    assert "is too long for tiny" in str(error) and "--window" in str(error)
    assert "'chr1:0-13000(+)'" in str(error)
    bad = bed_file(tmp_path, long + BED + "chr9\t0\t10\n", name="bad.bed")
    assert "unknown chromosome 'chr9'" in str(engine_error(tmp_path, bad, ref, tokenizer))
    assert engine_error(tmp_path, bed, ref, tokenizer, window=500) is None


def test_the_driver_holds_one_shard_at_a_time(tmp_path):
    """Each shard's rows go to its plan file as soon as it is full: reading row i, every
    full shard before it is already on disk, and only the current shard is in memory."""
    folder = tmp_path / "plan"
    folder.mkdir()
    seen = []

    def records():
        for i in range(10):
            seen.append(len(list(folder.glob("input-*.parquet"))))
            yield SequenceRecord(f"s{i}", None, None, None, "+", "ACGT" * (i + 1), ())

    plan, pending = _plan(records(), None, folder, 4, None)
    assert pending is None and seen == [i // 4 for i in range(10)]
    assert [s.rows for s in plan.shards] == [4, 4, 2] and plan.rows == 10
    assert [r["id"] for r in read_rows(plan.shards[2].path)] == ["s8", "s9"]
    assert read_rows(plan.shards[0].path)[1]["sequence"] == "ACGT" * 2


def test_repeats_are_merged_as_ingest_merges_them(tmp_path):
    a = SequenceRecord("a", None, None, None, "+", "ACGT", ("x",), where="f, line 2")
    again = SequenceRecord("a", None, None, None, "+", "ACGT", ("y",), where="f, line 3")
    other = SequenceRecord("a", None, None, None, "+", "AAAA", (), where="f, line 4")
    assert [r["repeat"] for r in record_rows([a, again])] == [False, True]
    with pytest.raises(InputError, match="line 2 and f, line 4"):
        list(record_rows([a, other]))
    ref, bed = genome(tmp_path / "ref.fa"), bed_file(tmp_path)
    rows = list(lookup_repeats(lookup_rows(read_bed_regions(bed, ref).regions)))
    assert [r["repeat"] for r in rows] == [False] * 5 + [True]  # r2again: r2's coordinates
    plan = Plan(tmp_path, 4)
    for row in rows:
        plan.add(row)
    plan.flush()
    assert plan.duplicates == 1 and read_rows(plan.shards[0].path)[0]["sequence"] is None


def test_the_first_problem_waits_only_for_shards_that_can_come_before_it():
    shards = [type("S", (), {"index": i, "first_region": r})() for i, r in
              enumerate([0, 2, 2, 3, 5])]  # fmt: skip
    problems = FirstProblem(shards, done=[0])

    def answer(shard, kind="", key=(0, 0, 0)):
        return {"shard": shard, "n": 1, "kind": kind, "key": key, "message": f"{kind}{key}"}

    problems.add(answer(3, "input", (3, 0, 40)))
    assert not problems.settled  # shards 1 and 2 start before region 3
    problems.add(answer(2, "input", (2, 1, 10)))
    problems.add(answer(1))
    assert problems.settled  # shard 4 starts at region 5: it cannot come first
    assert str(problems.error()) == "input(2, 1, 10)"
    late = FirstProblem(shards)
    for i in (4, 3, 2, 1):
        late.add(answer(i, "long", (i, 1, 0)) if i > 2 else answer(i))
    assert not late.settled  # an input problem in shard 0 would still come first
    late.add(answer(0))
    assert late.settled and str(late.error()) == "long(3, 1, 0)"
    pending = InputError("f, line 9: bad")
    assert late.error(pending) is pending
