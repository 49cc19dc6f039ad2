"""Annotation sources: what links a sequence to (:Annotation) nodes.

A source is anything with a ``name`` and ``annotate(records)``, which returns one list of
`AnnotationHit`s per record, in the records' order. Built in:

* ``bed`` — `BedIntervalSource`: interval overlap with a BED track (RefSeq functional
  elements …), ``OVERLAPS``; records without coordinates get no hit;
* ``g4`` — `G4Source`: G-quadruplex pattern scan, ``HAS_MOTIF``;
* ``jaspar`` — `JasparSource`: JASPAR PWM scan at a p-value, ``HAS_MOTIF``.

Sources are selected from the run's configuration by `build_sources` and applied together
by `annotate_all`. The graph writer routes each hit by its ``relationship`` type through a
table of statements, so a new source that links by an existing type is one new module: a
class with ``name`` and ``annotate``, registered with ``@register_source("kind")`` and
selected with ``build_sources(extra=["kind"])`` (``"package.module:kind"`` imports the
module first, so nothing else has to import it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from hsg.regions.annotations import AnnotationHit
from hsg.regions.intervals import REFSEQ_KIND, IntervalIndex, load_bed_intervals
from hsg.regions.motifs import MotifScanner, find_g_quadruplexes
from hsg.regions.records import SequenceRecord


@runtime_checkable
class AnnotationSource(Protocol):
    """Annotates records; ``annotate`` returns exactly one hit list per record, in order."""

    name: str

    def annotate(self, records: Sequence[SequenceRecord]) -> list[list[AnnotationHit]]: ...


SourceFactory = Callable[..., AnnotationSource]
F = TypeVar("F", bound=SourceFactory)

# kind → factory (a class or a function) taking the source's options as keywords.
SOURCES: dict[str, SourceFactory] = {}


def register_source(kind: str) -> Callable[[F], F]:
    """Class or function decorator: make the source selectable as `kind`."""

    def register(factory: F) -> F:
        known = SOURCES.get(kind)
        if known is not None and known is not factory:
            raise ValueError(f"annotation source {kind!r} is registered twice")
        SOURCES[kind] = factory
        return factory

    return register


def make_source(spec: str, **options: Any) -> AnnotationSource:
    """The source registered as `spec` (``kind`` or ``package.module:kind``)."""
    module, sep, kind = spec.rpartition(":")
    if sep:
        if not module or not kind:
            raise ValueError(f"annotation source {spec!r}: expected KIND or package.module:KIND")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"annotation source {spec!r}: cannot import {module}: {exc}") from exc
    factory = SOURCES.get(kind)
    if factory is None:
        known = ", ".join(sorted(SOURCES)) or "none"
        raise ValueError(f"unknown annotation source {kind!r} (known: {known})")
    return factory(**options)


def build_sources(
    annotations: Iterable[str | Path] = (),
    g4: bool = True,
    jaspar: bool = False,
    jaspar_pvalue: float = 1e-4,
    extra: Iterable[str] = (),
) -> list[AnnotationSource]:
    """The sources a run asked for, in a fixed order: one BED track per file of
    `annotations`, the G4 scan, the JASPAR scan, then `extra` (registered kinds).

    Loading happens here (BED files are indexed, JASPAR matrices prepared), so a bad file or
    option fails before anything is encoded or written.
    """
    sources = [make_source("bed", path=path) for path in annotations]
    if g4:
        sources.append(make_source("g4"))
    if jaspar:
        sources.append(make_source("jaspar", pvalue=jaspar_pvalue))
    sources.extend(make_source(spec) for spec in extra)
    return sources


def annotate_all(
    sources: Sequence[AnnotationSource], records: Sequence[SequenceRecord]
) -> list[list[AnnotationHit]]:
    """Every source's hits per record, in source order; fails on a source that does not
    return one hit list per record (its hits would land on the wrong sequences)."""
    records = list(records)
    hits: list[list[AnnotationHit]] = [[] for _ in records]
    for source in sources:
        per_record = list(source.annotate(records))
        if len(per_record) != len(records):
            raise ValueError(
                f"annotation source {source.name!r} returned {len(per_record)} hit lists for "
                f"{len(records)} records"
            )
        for mine, theirs in zip(hits, per_record, strict=True):
            mine.extend(theirs)
    return hits


# --------------------------------------------------------------------------- built-ins


@register_source("bed")
class BedIntervalSource:
    """Interval overlap with one BED track (`hsg.regions.intervals`), linked by OVERLAPS."""

    def __init__(self, path: str | Path, kind: str = REFSEQ_KIND, prefix: str = "refseq") -> None:
        self.index = load_bed_intervals(path, kind=kind, prefix=prefix)
        self.name = f"bed:{Path(path).name}"

    @classmethod
    def from_index(cls, index: IntervalIndex) -> BedIntervalSource:
        """A source over an index built elsewhere (tests, tracks not read from a file)."""
        source = cls.__new__(cls)
        source.index = index
        source.name = f"bed:{index.source}"
        return source

    def annotate(self, records: Sequence[SequenceRecord]) -> list[list[AnnotationHit]]:
        return [self.index.annotate(record) for record in records]


@register_source("g4")
class G4Source:
    """G-quadruplex pattern scan on both strands (`find_g_quadruplexes`), HAS_MOTIF."""

    name = "g4"

    def annotate(self, records: Sequence[SequenceRecord]) -> list[list[AnnotationHit]]:
        return [list(find_g_quadruplexes(record.sequence)) for record in records]


@register_source("jaspar")
class JasparSource:
    """JASPAR position weight matrix scan (`MotifScanner`), HAS_MOTIF. Needs pyjaspar for
    the bundled matrices; `from_scanner` takes any scanner (your own matrices)."""

    name = "jaspar"

    def __init__(
        self,
        pvalue: float = 1e-4,
        collection: str = "CORE",
        tax_group: str = "vertebrates",
        release: str | None = None,
    ) -> None:
        self.scanner = MotifScanner(
            collection=collection, tax_group=tax_group, pvalue=pvalue, release=release
        )

    @classmethod
    def from_scanner(cls, scanner: MotifScanner) -> JasparSource:
        source = cls.__new__(cls)
        source.scanner = scanner
        return source

    def annotate(self, records: Sequence[SequenceRecord]) -> list[list[AnnotationHit]]:
        return [list(hits) for hits in self.scanner.scan_many([r.sequence for r in records])]
