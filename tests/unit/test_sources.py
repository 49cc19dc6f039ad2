"""Annotation sources (hsg.regions.sources) and the writer's routing of their hits by type."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from hsg.graph import statements
from hsg.graph.writer import GraphWriter, SequenceWrite
from hsg.regions import sources
from hsg.regions.annotations import AnnotationHit, MotifHit
from hsg.regions.intervals import load_bed_intervals
from hsg.regions.motifs import MotifMatrix, MotifScanner, find_g_quadruplexes
from hsg.regions.records import SequenceRecord
from hsg.regions.sources import (
    AnnotationSource,
    BedIntervalSource,
    G4Source,
    JasparSource,
    annotate_all,
    build_sources,
    make_source,
    register_source,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ingest"
ELEMENTS = FIXTURES / "elements.bed"
G4 = "GGGTTGGGTTGGGTTGGG"


def _records() -> list[SequenceRecord]:
    placed = "AC" * 20 + G4 + "AC" * 20  # 98 bases on chr1:120-218(+): enhancer, CTCF, silencer
    return [
        SequenceRecord("r1", "chr1", 120, 120 + len(placed), "+", placed),
        SequenceRecord("r2", "chr2", 0, 30, "-", "A" * 30),  # promoter, mirrored
        SequenceRecord("plain", None, None, None, "+", "CCCAACCCAACCCAACCC"),  # no coordinates
    ]


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so test registrations do not leak."""
    copy = dict(sources.SOURCES)
    monkeypatch.setattr(sources, "SOURCES", copy)
    return copy


# --------------------------------------------------------------------------- selection


def test_build_sources_selects_from_config_in_a_fixed_order():
    assert [s.name for s in build_sources()] == ["g4"]
    assert build_sources(g4=False) == []
    chosen = build_sources(annotations=[ELEMENTS, str(ELEMENTS)], g4=True)
    assert [s.name for s in chosen] == ["bed:elements.bed", "bed:elements.bed", "g4"]
    assert [type(s) for s in chosen] == [BedIntervalSource, BedIntervalSource, G4Source]
    for source in chosen:
        assert isinstance(source, AnnotationSource)


def test_build_sources_passes_the_jaspar_pvalue(registry):
    seen = {}

    def fake_jaspar(pvalue):
        seen["pvalue"] = pvalue
        return JasparSource.from_scanner(_toy_scanner(pvalue))

    registry["jaspar"] = fake_jaspar
    chosen = build_sources(g4=False, jaspar=True, jaspar_pvalue=1e-3)
    assert [s.name for s in chosen] == ["jaspar"] and seen == {"pvalue": 1e-3}
    assert build_sources(g4=False, jaspar=False) == []


def test_bad_files_fail_when_the_sources_are_built(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        build_sources(annotations=[tmp_path / "missing.bed"])
    empty = tmp_path / "empty.bed"
    empty.write_text("")
    with pytest.raises(ValueError, match="no intervals"):
        build_sources(annotations=[empty])


def test_unknown_source_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown annotation source 'cpg' \(known: bed, g4,"):
        make_source("cpg")
    with pytest.raises(ValueError, match="cannot import"):
        make_source("no_such_module_hsg:cpg")
    with pytest.raises(ValueError, match="expected KIND"):
        make_source(":cpg")


def test_a_kind_is_registered_once(registry):
    @register_source("toy")
    class Toy:
        name = "toy"

        def annotate(self, records):
            return [[] for _ in records]

    assert register_source("toy")(Toy) is Toy  # the same factory again is harmless
    with pytest.raises(ValueError, match="registered twice"):

        @register_source("toy")
        class Other(Toy):
            pass


# --------------------------------------------------------------------------- built-ins


def test_bed_source_wraps_the_interval_index():
    index = load_bed_intervals(ELEMENTS)
    records = _records()
    got = BedIntervalSource(ELEMENTS).annotate(records)
    assert got == [index.annotate(r) for r in records]
    assert {h.name for h in got[0]} == {"enhancer", "protein_bind:_CTCF", "silencer"}
    assert [h.name for h in got[1]] == ["promoter"]
    assert got[2] == []  # no coordinates, no overlap
    assert BedIntervalSource.from_index(index).annotate(records) == got
    custom = BedIntervalSource(ELEMENTS, kind="track", prefix="mine").annotate(records)
    assert {h.kind for h in custom[0]} == {"track"}
    assert all(h.annotation_id.startswith("mine:") for h in custom[0])


def test_g4_source_scans_every_record():
    records = _records()
    got = G4Source().annotate(records)
    assert got == [find_g_quadruplexes(r.sequence) for r in records]
    assert [h.strand for h in got[0]] == ["+"] and [h.strand for h in got[2]] == ["-"]
    assert got[1] == []
    assert all(isinstance(h, MotifHit) and h.relationship == "HAS_MOTIF" for h in got[0])


def _toy_scanner(pvalue: float = 1e-3) -> MotifScanner:
    counts = np.eye(4)[[2, 2, 2, 0, 0, 2, 2, 2]] * 100  # GGGAAGGG
    return MotifScanner.from_matrices([MotifMatrix("T1", "toy", counts)], pvalue=pvalue)


def test_jaspar_source_wraps_the_scanner():
    scanner = _toy_scanner()
    records = [
        SequenceRecord("a", None, None, None, "+", "ACGTGGGAAGGGTTTT"),
        SequenceRecord("b", None, None, None, "+", "ACGTACGTACGT"),
        SequenceRecord("c", None, None, None, "+", "CCCTTCCC"),  # the site on the - strand
    ]
    got = JasparSource.from_scanner(scanner).annotate(records)
    assert got == [scanner.scan(r.sequence) for r in records]
    assert [(h.start, h.strand) for h in got[0]] == [(4, "+")]
    assert got[1] == [] and [h.strand for h in got[2]] == ["-"]


def test_jaspar_source_loads_the_bundled_matrices():
    pytest.importorskip("pyjaspar", reason="pyjaspar (with its bundled JASPAR SQLite) absent")
    source = make_source("jaspar", pvalue=1e-5)
    assert source.name == "jaspar" and source.scanner.pvalue == 1e-5
    assert len(source.scanner) > 500


# --------------------------------------------------------------------------- combining


def test_annotate_all_concatenates_per_record_in_source_order():
    records = _records()
    index = load_bed_intervals(ELEMENTS)
    scanner = _toy_scanner()
    chosen = [BedIntervalSource(ELEMENTS), G4Source(), JasparSource.from_scanner(scanner)]
    got = annotate_all(chosen, records)
    # what the ingest Annotator produced before sources existed: BED, then G4, then JASPAR
    expected = [
        index.annotate(r) + find_g_quadruplexes(r.sequence) + scanner.scan(r.sequence)
        for r in records
    ]
    assert got == expected
    assert annotate_all([], records) == [[], [], []]
    assert annotate_all(chosen, []) == []


def test_a_source_that_loses_records_is_refused():
    class Lossy:
        name = "lossy"

        def annotate(self, records):
            return [[]]

    with pytest.raises(ValueError, match="'lossy' returned 1 hit lists for 3 records"):
        annotate_all([Lossy()], _records())


@dataclass(frozen=True)
class CpGHit(AnnotationHit):
    relationship: ClassVar[str] = "OVERLAPS"


def test_a_new_source_is_one_module(registry, tmp_path, monkeypatch):
    """A source in its own module, registered there, selected by 'module:kind'; its hits
    use an existing relationship type, so the writer accepts them as they are."""
    (tmp_path / "hsg_test_cpg_source.py").write_text(
        textwrap.dedent(
            """
            from hsg.regions.annotations import AnnotationHit
            from hsg.regions.sources import register_source

            @register_source("cpg")
            class CpGSource:
                name = "cpg"

                def annotate(self, records):
                    out = []
                    for r in records:
                        i = r.sequence.find("CGCG")
                        out.append([] if i < 0 else [AnnotationHit(
                            "cpg", "cpg_island", "CpG", "test", i, i + 4, ".")])
                    return out
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    chosen = build_sources(g4=False, extra=["hsg_test_cpg_source:cpg"])
    assert [s.name for s in chosen] == ["cpg"]
    assert [s.name for s in build_sources(g4=False, extra=["cpg"])] == ["cpg"]  # now known
    records = [
        SequenceRecord("x", None, None, None, "+", "AACGCGAA"),
        SequenceRecord("y", None, None, None, "+", "AAAA"),
    ]
    hits = annotate_all(chosen, records)
    assert [[(h.annotation_id, h.start) for h in per] for per in hits] == [[("cpg", 2)], []]
    assert statements.link_statement(hits[0][0].relationship) is statements.LINK_OVERLAPS


# --------------------------------------------------------------------------- routing


def test_every_hit_type_has_a_link_statement():
    for hit_type in (AnnotationHit, MotifHit):
        statement = statements.link_statement(hit_type.relationship)
        assert f"[r:{hit_type.relationship} " in statement
    for relationship, statement in statements.LINK_STATEMENTS.items():
        assert f"MERGE (s)-[r:{relationship} " in statement
        assert "$rows" in statement


def test_unknown_relationship_type_fails_clearly():
    with pytest.raises(ValueError, match=r"'MENTIONS' \(known: HAS_MOTIF, OVERLAPS\)"):
        statements.link_statement("MENTIONS")


@dataclass(frozen=True)
class MentionHit(AnnotationHit):
    relationship: ClassVar[str] = "MENTIONS"


def test_writer_refuses_an_unknown_type_before_writing():
    class NoDriver:
        def session(self, **kwargs):
            raise AssertionError("the writer must fail before opening a session")

    writer = GraphWriter(NoDriver(), "neo4j", "sae", "run")
    hit = MentionHit("paper:1", "paper", "a paper", "test", 0, 5, ".")
    with pytest.raises(ValueError, match="MENTIONS"):
        writer.write_batch([SequenceWrite("s1", {"length": 10}, ["pos"], [], [hit])])
