"""The hit types shared by every annotation source.

Interval overlaps (RefSeq), JASPAR motif scans and G-quadruplex scans all produce the same
shape, so the graph writer needs one code path: MERGE an ``(:Annotation)`` node from
`AnnotationHit.node_properties` and create a relationship of type `AnnotationHit.relationship`
carrying `AnnotationHit.relationship_properties`.

Positions are always in *sequence* coordinates (0-based half-open, on the record's own
strand), so a hit on a ``-`` strand record points at the same bases the model sees.
``strand`` is relative to the record's sequence as well: ``+`` means the element reads along
the sequence as given, ``-`` along its reverse complement, ``.`` unstranded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class AnnotationHit:
    """One annotation touching one sequence.

    ``annotation_id`` identifies the (:Annotation) node and is stable across runs (e.g.
    ``refseq:chr1:1069211-1069326:enhancer``, ``jaspar:MA0139.2``, ``g4``); ``start``/``end``
    are where on the sequence it applies.
    """

    annotation_id: str
    kind: str
    name: str
    source: str
    start: int
    end: int
    strand: str
    score: float | None = None

    relationship: ClassVar[str] = "OVERLAPS"

    def node_properties(self) -> dict[str, Any]:
        """Properties of the (:Annotation) node; identical for every hit of one annotation."""
        return {"id": self.annotation_id, "kind": self.kind, "name": self.name,
                "source": self.source}  # fmt: skip

    def relationship_properties(self) -> dict[str, Any]:
        """Properties of the relationship from the sequence (None values left out)."""
        props: dict[str, Any] = {"start": self.start, "end": self.end, "strand": self.strand}
        if self.score is not None:
            props["score"] = self.score
        return props


@dataclass(frozen=True)
class MotifHit(AnnotationHit):
    """A sequence-scan hit (JASPAR PWM or G-quadruplex pattern).

    ``matched`` is the hit's text read on the hit's strand (so a ``-`` strand CTCF site reads
    like the CTCF consensus). ``threshold`` is the score cut-off applied and ``pvalue`` the
    hit's own p-value under a uniform background (PWM hits only).
    """

    motif_id: str = ""
    matched: str = ""
    threshold: float | None = None
    pvalue: float | None = None

    relationship: ClassVar[str] = "HAS_MOTIF"

    def relationship_properties(self) -> dict[str, Any]:
        props = super().relationship_properties()
        props["matched"] = self.matched
        if self.threshold is not None:
            props["threshold"] = self.threshold
        if self.pvalue is not None:
            props["pvalue"] = self.pvalue
        return props
