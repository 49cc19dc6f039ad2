"""The built-in dataset: reproducible, cleanly separable, and readable back from TSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsg.regions.motifs import find_g_quadruplexes
from hsg.regions.readers import read_records
from hsg.regions.records import InputError, make_id, reverse_complement
from hsg.regions.synthetic import DEFAULT_MOTIF, make_synthetic_dataset, write_tsv


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic_dataset()


def test_reproducible() -> None:
    a = make_synthetic_dataset(n=20, seed=5)
    assert a == make_synthetic_dataset(n=20, seed=5)
    assert a != make_synthetic_dataset(n=20, seed=6)


def test_classes_and_coordinates(dataset) -> None:
    assert len(dataset) == 200
    labels = [r.labels for r in dataset]
    assert labels.count(("motif_positive",)) == labels.count(("motif_negative",)) == 100
    assert len({r.id for r in dataset}) == 200
    for r in dataset:
        assert r.length == 100 and r.chrom == "synth1" and r.strand == "+"
        assert r.id == make_id(r.chrom, r.start, r.end, r.strand)
        assert r.end - r.start == 100
    # Classes are interleaved, not blocked, so any prefix holds both.
    assert {r.labels for r in dataset[:20]} == {("motif_positive",), ("motif_negative",)}


def test_motif_only_in_positives(dataset) -> None:
    rc = reverse_complement(DEFAULT_MOTIF)
    for r in dataset:
        positive = r.labels == ("motif_positive",)
        has_motif = DEFAULT_MOTIF in r.sequence or rc in r.sequence
        assert has_motif == positive, r.id
        # The default motif is a G-quadruplex: the g4 annotation marks exactly the positives.
        assert bool(find_g_quadruplexes(r.sequence)) == positive, r.id


def test_options() -> None:
    records = make_synthetic_dataset(n=10, length=30, seed=1, motif="acgtacgtaa",
                                     positive_fraction=0.3, positive_label="yes",
                                     negative_label="no", chrom="fake")  # fmt: skip
    assert [r.labels[0] for r in records].count("yes") == 3
    assert all("ACGTACGTAA" in r.sequence for r in records if r.labels == ("yes",))
    assert records[1].id == "fake:130-160(+)"
    with pytest.raises(ValueError, match="motif length"):
        make_synthetic_dataset(n=2, length=10, motif="A" * 11)
    with pytest.raises(InputError, match="invalid base"):
        make_synthetic_dataset(n=2, motif="GGGXGGG")


def test_tsv_round_trip(dataset, tmp_path: Path) -> None:
    path = write_tsv(dataset, tmp_path / "synthetic.tsv")
    header = path.read_text().splitlines()[0]
    assert header == "id\tchrom\tstart\tend\tstrand\tsequence\tlabel"
    assert list(read_records(path)) == dataset
