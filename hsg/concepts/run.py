"""Concept and motif runs: gather inputs (graph, BED, JASPAR scan, fresh encoding), compute,
write tables, plots and graph relationships.

The pure computations are `hsg.concepts.f1` and `hsg.concepts.motifs`; this module only
moves data between them and the outside. Graph statements live in
`hsg.graph.concept_writes`.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hsg.concepts.data import (
    Concept,
    ConceptLabels,
    TokenActivations,
    TokenIndex,
    activations_from_rows,
    concept_labels,
    token_index,
)
from hsg.concepts.f1 import ConceptConfig, ConceptResult, concept_f1
from hsg.concepts.motifs import (
    FeatureMotif,
    MotifConfig,
    MotifDatabase,
    compare,
    feature_motif,
    jaspar_database,
    save_logo,
)

Log = Callable[[str], None]
CONCEPT_PREFIX = "concept"


class ConceptError(ValueError):
    """A user-facing problem with the inputs; the message says which option or file."""


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Activations and the sequences' concept intervals, on one token index."""

    activations: TokenActivations
    intervals: dict[int, list[tuple[Concept, int, int]]] = field(default_factory=dict)
    coordinates: list[dict[str, Any]] = field(default_factory=list)  # per sequence
    sae: str = ""

    @property
    def index(self) -> TokenIndex:
        return self.activations.index

    def add(self, seq: int, concept: Concept, start: int, end: int) -> None:
        self.intervals.setdefault(seq, []).append((concept, start, end))

    def labels(self) -> ConceptLabels:
        return concept_labels(self.index, self.intervals)


def concept_for(kind: str, name: str, ids: set[str]) -> Concept:
    """One node for the name when it has one, else the MERGEd concept node."""
    if len(ids) == 1:
        (only,) = ids
        return Concept(only, name, kind)
    return Concept(f"{CONCEPT_PREFIX}:{kind}:{name}", name, kind)


def group_annotations(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, Concept, int, int]]:
    """Annotation hits ``{id, annotation, kind, name, start, end}`` → (sequence id, concept,
    start, end), a concept per (kind, name)."""
    rows = list(rows)
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        ids[(r["kind"], r["name"])].add(r["annotation"])
    concepts = {key: concept_for(key[0], key[1], found) for key, found in ids.items()}
    return [
        (r["id"], concepts[(r["kind"], r["name"])], int(r["start"]), int(r["end"])) for r in rows
    ]


def resolve_sae(driver, database: str, sae: str | None) -> str:
    from hsg.graph.concept_writes import list_saes

    saes = list_saes(driver, database)
    if sae is None:
        if len(saes) != 1:
            raise ConceptError(
                f"the graph holds {len(saes)} SAEs ({', '.join(saes) or 'none'}); choose one "
                "with --sae-id"
            )
        return saes[0]
    if sae not in saes:
        raise ConceptError(f"no SAE {sae!r} in the graph (it holds: {', '.join(saes) or 'none'})")
    return sae


def inputs_from_graph(
    driver, database: str, sae: str | None = None, log: Log | None = None
) -> Inputs:
    """ACTIVATES of one SAE, and the OVERLAPS / HAS_MOTIF annotations of its sequences."""
    from hsg.graph import concept_writes as cw

    sae = resolve_sae(driver, database, sae)
    features = cw.feature_ids(driver, database, sae)
    sequences = cw.encoded_sequences(driver, database, sae)
    if not sequences:
        raise ConceptError(f"SAE {sae!r}: no sequence in the graph is encoded by it")
    ids = [s["id"] for s in sequences]
    if log:
        log(f"{len(ids)} sequences, {len(features)} features of {sae}")
    index = token_index(ids, [s["sequence"] for s in sequences])
    number = {sid: i for i, sid in enumerate(ids)}
    rows = (
        (number[r["id"]], r["position"], r["feature"], r["activation"])
        for r in cw.activation_rows(driver, database, sae, ids)
    )
    acts = activations_from_rows(index, rows, features)
    inputs = Inputs(acts, coordinates=sequences, sae=sae)
    for sid, concept, start, end in group_annotations(cw.annotation_rows(driver, database, ids)):
        inputs.add(number[sid], concept, start, end)
    if log:
        log(f"{acts.values.nnz} token activations, {len(inputs.intervals)} annotated sequences")
    return inputs


def inputs_from_shards(directory: str | Path, log: Log | None = None) -> Inputs:
    """Activations and annotations from the activation shards of the Ray engine
    (`hsg.shards`, issue #16): the same rows `hsg load` would write to the graph, read
    without a database. The set is validated first (complete, one format, one manifest)."""
    from hsg.shards.reader import ShardSet

    shards = ShardSet(directory)
    totals = shards.validate(check_hashes=False)
    sae = str(shards.manifest.sae["id"])
    d_sae = int(shards.manifest.sae["d_sae"])
    seqs: list[dict[str, Any]] = []
    acts: list[tuple[str, int, int, float]] = []
    hits: list[dict[str, Any]] = []
    for i in range(shards.manifest.shards):
        shard = shards.read(i)
        seqs += [r for r in shard.sequences.to_pylist() if r["encoded"]]
        a = shard.activations.to_pydict()
        acts += list(zip(a["sequence_id"], a["position"], a["feature"], a["activation"],
                         strict=True))  # fmt: skip
        hits += [{"id": r["sequence_id"], "annotation": r["annotation_id"], "kind": r["kind"],
                  "name": r["name"], "start": r["start"], "end": r["end"]}
                 for r in shard.annotations.to_pylist()]  # fmt: skip
    if not seqs:
        raise ConceptError(f"{directory}: the shard set holds no encoded sequence")
    ids = [r["id"] for r in seqs]
    number = {sid: i for i, sid in enumerate(ids)}
    index = token_index(ids, [r["sequence"] for r in seqs])
    rows = ((number[sid], pos, f, v) for sid, pos, f, v in acts if sid in number)
    activations = activations_from_rows(index, rows, [f"{sae}/{i}" for i in range(d_sae)])
    inputs = Inputs(activations, coordinates=seqs, sae=sae)
    for sid, concept, start, end in group_annotations(h for h in hits if h["id"] in number):
        inputs.add(number[sid], concept, start, end)
    if log:
        log(f"{totals['shards']} shards: {len(ids)} sequences, {activations.values.nnz} "
            f"activations of {sae}")  # fmt: skip
    return inputs


def add_bed(inputs: Inputs, path: str | Path) -> int:
    """Label by a BED file (name column = concept); needs the sequences' coordinates."""
    from hsg.regions.intervals import load_bed_intervals

    index = load_bed_intervals(path)
    hits: list[dict[str, Any]] = []
    for i, s in enumerate(inputs.coordinates):
        if s.get("chrom") is None or s.get("start") is None or s.get("end") is None:
            continue
        for h in index.overlaps(s["chrom"], s["start"], s["end"], s.get("strand") or "+"):
            hits.append({"id": i, "annotation": h.annotation_id, "kind": h.kind,
                         "name": h.name, "start": h.start, "end": h.end})  # fmt: skip
    for seq, concept, start, end in group_annotations(hits):
        inputs.add(seq, concept, start, end)
    return len(hits)


def add_jaspar(inputs: Inputs, pvalue: float = 1e-4, scanner=None) -> int:
    """Label by a JASPAR scan of the sequences (one concept per motif name)."""
    from hsg.regions.motifs import MotifScanner

    scanner = scanner or MotifScanner(pvalue=pvalue)
    hits: list[dict[str, Any]] = []
    for i, found in enumerate(scanner.scan_many(inputs.index.sequences)):
        hits += [{"id": i, "annotation": h.annotation_id, "kind": h.kind, "name": h.name,
                  "start": h.start, "end": h.end} for h in found]  # fmt: skip
    for seq, concept, start, end in group_annotations(hits):
        inputs.add(seq, concept, start, end)
    return len(hits)


def inputs_from_encoding(
    records: Sequence, encoder, sae, batch_size: int = 32, sae_id: str = ""
) -> Inputs:
    """Fresh activations: every positive latent of every content token (no top-k)."""
    import torch

    ids = [r.id for r in records]
    index = token_index(ids, [r.sequence for r in records])
    layer = sae.cfg.layer
    param = next(sae.parameters())
    rows: list[tuple[int, int, int, float]] = []
    for lo in range(0, len(records), batch_size):
        batch = records[lo : lo + batch_size]
        out = encoder.embed([r.sequence for r in batch], layer, names=[r.id for r in batch])
        with torch.inference_mode():
            for b in range(len(batch)):
                hidden = out.hidden[b][out.content_mask[b]].to(param.device, param.dtype)
                z = sae.encode(hidden).float().cpu().numpy()
                pos, feat = np.nonzero(z > 0)
                rows += [
                    (lo + b, int(p), int(f), float(z[p, f])) for p, f in zip(pos, feat, strict=True)
                ]
    d_sae = sae.cfg.d_sae
    prefix = sae_id or "sae"
    acts = activations_from_rows(index, rows, [f"{prefix}/{i}" for i in range(d_sae)])
    coords = [
        {"id": r.id, "chrom": r.chrom, "start": r.start, "end": r.end, "strand": r.strand}
        for r in records
    ]
    return Inputs(acts, coordinates=coords, sae=sae_id)


# --------------------------------------------------------------------------- concept run


@dataclass
class ConceptRun:
    """What `run_concepts` computed and wrote."""

    run_id: str
    sae: str
    result: ConceptResult
    table: pd.DataFrame
    best: pd.DataFrame
    files: list[str] = field(default_factory=list)
    written: int = 0  # DETECTS relationships

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "sae": self.sae,
            "features": len(self.result.feature_ids),
            "concepts": len(self.result.concepts),
            "pairs": len(self.table),
            "tokens": self.result.tokens,
            "sequences": self.result.sequences,
            "detects_written": self.written,
            "files": self.files,
        }


def run_concepts(
    inputs: Inputs,
    config: ConceptConfig,
    *,
    top: int = 5,
    min_f1: float = 0.0,
    out: Path | None = None,
    plot: bool = True,
    log: Log | None = None,
) -> ConceptRun:
    """Score, pick the `top` features of each concept by select F1, write the files."""
    labels = inputs.labels()
    if not labels.concepts:
        raise ConceptError(
            "no concept touches any sequence: ingest with --annotations/--jaspar, or give "
            "--bed FILE or --jaspar here"
        )
    result = concept_f1(inputs.activations, labels, config, progress=log)
    table = result.table()
    best = table.groupby("concept", sort=True).head(top)
    best = best[best["f1"] > min_f1].reset_index(drop=True)  # an F1 of 0 detects nothing
    run = ConceptRun(uuid.uuid4().hex[:12], inputs.sae, result, table, best)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        run.files += _write_table(table, out / "concepts")
        run.files += _write_table(best, out / "concepts_best")
        (out / "concepts.json").write_text(
            json.dumps({**run.summary(), "config": json.loads(config.to_json())}, indent=2)
        )
        run.files.append(str(out / "concepts.json"))
        if plot:
            run.files.append(str(plot_summary(result, table, out / "concepts.png")))
    return run


def _write_table(frame: pd.DataFrame, stem: Path) -> list[str]:
    tsv, parquet = stem.with_suffix(".tsv"), stem.with_suffix(".parquet")
    frame.to_csv(tsv, sep="\t", index=False)
    files = [str(tsv)]
    try:
        frame.to_parquet(parquet, index=False)
        files.append(str(parquet))
    except ImportError:  # pragma: no cover - pyarrow missing
        pass
    return files


def plot_summary(result: ConceptResult, table: pd.DataFrame, path: Path) -> Path:
    """Best test F1 per concept (its select-chosen feature) and features per concept."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = table.groupby("concept", sort=True).head(1).sort_values("f1", ascending=False)
    best = best.head(40)
    per_concept = (table[table["f1"] >= 0.5].groupby("concept").size()
                   .reindex(best["concept"]).fillna(0))  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.25 * len(best) + 1)), sharey=True)
    try:
        y = np.arange(len(best))
        axes[0].barh(y, best["f1"], color="#3a6ea5")
        axes[0].set_yticks(y, best["concept"], fontsize=7)
        axes[0].invert_yaxis()
        axes[0].set_xlim(0, 1)
        axes[0].set_xlabel("best F1 (test split, threshold chosen on select)")
        axes[1].barh(y, per_concept.to_numpy(), color="#a55a3a")
        axes[1].set_xlabel("features with test F1 ≥ 0.5")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def detects_rows(run: ConceptRun) -> list[dict[str, Any]]:
    """Rows for `hsg.graph.concept_writes.replace_detects`."""
    rows = []
    for r in run.best.itertuples(index=False):
        rows.append(
            {
                "feature": r.feature,
                "annotation_id": r.annotation_id,
                "name": r.concept,
                "kind": r.kind,
                "concept_node": str(r.annotation_id).startswith(CONCEPT_PREFIX + ":"),
                "props": {
                    "f1": float(r.f1),
                    "precision": float(r.precision),
                    "recall": float(r.recall),
                    "select_f1": float(r.select_f1),
                    "threshold": float(r.threshold),
                    "threshold_fraction": float(r.threshold_fraction),
                    "tp": int(r.tp),
                    "support": int(r.support),
                    "split": "test",
                },
            }
        )
    return rows


# --------------------------------------------------------------------------- motif run


@dataclass
class MotifRun:
    run_id: str
    sae: str
    release: str
    motifs: list[FeatureMotif]
    files: list[str] = field(default_factory=list)
    written: int = 0

    def table(self) -> pd.DataFrame:
        rows = []
        for m in self.motifs:
            for rank, match in enumerate(m.matches):
                rows.append({"feature": m.feature, "consensus": m.consensus(),
                             "seqlets": len(m.seqlets), "rank": rank, "motif": match.motif_id,
                             "name": match.name, "pvalue": match.pvalue, "qvalue": match.qvalue,
                             "offset": match.offset, "orientation": match.orientation})  # fmt: skip
            if not m.matches:
                rows.append({"feature": m.feature, "consensus": m.consensus(),
                             "seqlets": len(m.seqlets), "rank": None, "motif": None})  # fmt: skip
        return pd.DataFrame(rows)


def select_features(
    activations: TokenActivations, features: Sequence[str] | None, min_activations: int
) -> list[int]:
    """Columns of the named features (ids or indices), else every feature with at least
    `min_activations` stored activations."""
    if features:
        by_id = {fid: i for i, fid in enumerate(activations.feature_ids)}
        cols = []
        for f in features:
            if f in by_id:
                cols.append(by_id[f])
            elif str(f).isdigit() and int(f) < activations.n_features:
                cols.append(int(f))
            else:
                raise ConceptError(f"feature {f!r} is not a feature of this SAE")
        return cols
    counts = np.diff(activations.values.tocsc().indptr)
    return [int(i) for i in np.nonzero(counts >= min_activations)[0]]


def targets_features(path: str | Path) -> list[str]:
    """Feature ids of a targets.json (`hsg targets`)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConceptError(f"{p}: cannot read targets ({exc})") from exc
    items = data.get("targets", data.get("features")) if isinstance(data, dict) else data
    out = []
    for t in items or []:
        if isinstance(t, dict):
            out.append(str(t.get("feature_id") or t.get("feature") or t.get("id")))
        else:
            out.append(str(t))
    if not out:
        raise ConceptError(f"{p}: no targets in it")
    return out


def run_motifs(
    inputs: Inputs,
    columns: Sequence[int],
    config: MotifConfig,
    *,
    database: MotifDatabase | None = None,
    out: Path | None = None,
    logos: bool = True,
    log: Log | None = None,
) -> MotifRun:
    """Seqlets → PWM → Tomtom for each column; logos and a table in `out`."""
    motifs = []
    for n, col in enumerate(columns):
        motifs.append(feature_motif(inputs.activations, col, config))
        if log and (n + 1) % 50 == 0:
            log(f"{n + 1}/{len(columns)} motifs built")
    database = database or jaspar_database(config)
    if log:
        log(f"comparing {sum(m.pwm is not None for m in motifs)} motifs with {database.release}")
    compare(motifs, database, top=config.top_matches)
    run = MotifRun(uuid.uuid4().hex[:12], inputs.sae, database.release, motifs)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        run.files += _write_table(run.table(), out / "motifs")
        if logos:
            for m in motifs:
                name = m.feature.replace("/", "_")
                path = save_logo(m, out / "logos" / f"{name}.png")
                if path is not None:
                    run.files.append(str(path))
    return run


def resembles_rows(run: MotifRun, max_qvalue: float) -> tuple[list, list]:
    """(motifs, rows) for `hsg.graph.concept_writes.replace_resembles`."""
    motifs, rows = [], []
    for m in run.motifs:
        motifs.append({"feature": m.feature, "consensus": m.consensus(),
                       "pwm": json.dumps(np.round(m.pwm, 4).tolist()) if m.pwm is not None
                       else None, "seqlets": len(m.seqlets)})  # fmt: skip
        for rank, match in enumerate(m.matches):
            if match.qvalue <= max_qvalue:
                rows.append({"feature": m.feature, "annotation_id": match.annotation_id,
                             "name": match.name,
                             "props": {"pvalue": match.pvalue, "qvalue": match.qvalue,
                                       "offset": match.offset, "orientation": match.orientation,
                                       "rank": rank}})  # fmt: skip
    return motifs, rows
