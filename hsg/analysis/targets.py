"""Intervention targets: features ranked by differential centrality between two labels.

The ranking is the named query `queries/differential_centrality.cypher` over the CENTRALITY
scores of `hsg analyze pagerank`:

    log2_fold_change = log2((up_score + pseudo_count) / (down_score + pseudo_count))

with `up_score`/`down_score` the feature's normalised PageRank in each label (each label's
scores sum to 1, so graphs of different sizes compare).

* A feature scored in only one label (no sequence of the other label activates it) counts
  0 there; the pseudo-count keeps its fold change finite, and it is flagged `one_sided`
  because its fold change then depends on the pseudo-count rather than on two measurements.
* `min_support`: a feature is a candidate when at least `min_support` sequences of *either*
  label activate it. The filter is symmetric, so swapping up and down ranks the same
  candidates with negated fold changes.
* Ties are broken by the up score, then by feature index, so the order is deterministic.
* `top` larger than the number of candidates returns every candidate with a warning; no
  candidate at all is an error (nothing to steer).

The output (`targets.json`) is the steering step's input; its schema, `hsg.targets/1`:

    {
      "schema": "hsg.targets/1",
      "created": "2026-01-01T00:00:00+00:00",
      "sae": {"id", "layer", "d_in", "d_sae", "architecture", "config_sha256",
              "weights_sha256", "model": {"id" (its name), "version", "checkpoint_hash"}},
      "parameters": {"up", "down", "top", "min_support", "pseudo_count",
                     "centrality": {"damping", "weight", "orientation", "max_iterations",
                                    "tolerance", "computed": {"<up>": iso, "<down>": iso}}},
      "candidates": 123,
      "warnings": [],
      "targets": [{"rank": 1, "feature": "<sae>/3", "index": 3, "sae": "<sae>", "layer": 6,
                   "log2_fold_change", "up_score", "down_score", "up_support",
                   "down_support", "up_activations", "down_activations", "one_sided"}]
    }
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsg.analysis import AnalysisError, AnalysisSession
from hsg.analysis.pagerank import resolve_sae
from hsg.config import JsonConfig

SCHEMA = "hsg.targets/1"

# One CENTRALITY relationship per (label, SAE) stands for all of them: `replace_centrality`
# gives every relationship of a label the same run parameters in one transaction.
CENTRALITY_SETTINGS = """
UNWIND $labels AS name
OPTIONAL MATCH (:Label {name: name})<-[c:CENTRALITY]-(:Feature)
WHERE c.sae = $sae
WITH name, head(collect(c)) AS c
RETURN name, c IS NOT NULL AS scored,
       c {.damping, .weight, .orientation, .max_iterations, .tolerance} AS settings,
       c.computed AS computed
"""

SAE_PROVENANCE = """
MATCH (x:SAE {id: $sae})
OPTIONAL MATCH (x)-[:READS]->(m:Model)
RETURN x {.*} AS sae, m {.*} AS model
"""


@dataclass(frozen=True)
class TargetsConfig(JsonConfig):
    up: str
    down: str
    top: int = 20
    min_support: int = 3
    pseudo_count: float = 1e-6

    def __post_init__(self) -> None:
        if self.up == self.down:
            raise ValueError(f"--up and --down must differ, both are {self.up!r}")
        if self.top < 1:
            raise ValueError(f"top must be >= 1, got {self.top}")
        if self.min_support < 0:
            raise ValueError(f"min_support must be >= 0, got {self.min_support}")
        if not self.pseudo_count > 0:
            raise ValueError(
                f"pseudo_count must be > 0 (it keeps one-sided fold changes finite), "
                f"got {self.pseudo_count}"
            )


@dataclass(frozen=True)
class Target:
    rank: int
    feature: str
    index: int
    sae: str
    layer: int | None
    log2_fold_change: float
    up_score: float
    down_score: float
    up_support: int
    down_support: int
    up_activations: int
    down_activations: int
    one_sided: bool


COLUMNS = tuple(f.name for f in fields(Target))


@dataclass
class TargetsReport:
    sae: dict[str, Any]
    parameters: dict[str, Any]
    candidates: int
    targets: list[Target]
    created: str = ""
    warnings: list[str] = field(default_factory=list)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "created": self.created,
            "sae": self.sae,
            "parameters": self.parameters,
            "candidates": self.candidates,
            "warnings": list(self.warnings),
            "targets": [asdict(t) for t in self.targets],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetsReport:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema: {data.get('schema')!r})")
        return cls(
            sae=data["sae"],
            parameters=data["parameters"],
            candidates=data["candidates"],
            targets=[Target(**t) for t in data["targets"]],
            created=data.get("created", ""),
            warnings=list(data.get("warnings", [])),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_tsv(self) -> str:
        """One row per target; provenance and parameters as leading `# key: json` lines
        (pandas: `read_csv(path, sep="\\t", comment="#")`)."""
        out = io.StringIO()
        out.write(f"# schema: {self.schema}\n")
        out.write(f"# sae: {json.dumps(self.sae, sort_keys=True)}\n")
        out.write(f"# parameters: {json.dumps(self.parameters, sort_keys=True)}\n")
        out.write(f"# candidates: {self.candidates}\n")
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for target in self.targets:
            row = asdict(target)
            writer.writerow([str(row[c]).lower() if c == "one_sided" else row[c] for c in COLUMNS])
        return out.getvalue()


def load_targets(path: str | Path) -> TargetsReport:
    """Read a targets.json written by `hsg targets` (the steering step's entry point)."""
    return TargetsReport.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def sae_provenance(session: AnalysisSession, sae: str) -> dict[str, Any]:
    """What identifies the SAE: its shape, a hash of its stored config, its model."""
    rows = session.records(SAE_PROVENANCE, sae=sae)
    if not rows:
        raise AnalysisError(f"no SAE with id {sae!r}")
    node, model = rows[0]["sae"], rows[0]["model"] or {}
    config = node.get("config")
    weights = None
    if isinstance(config, str):
        try:
            weights = json.loads(config).get("weights_sha256")
        except (ValueError, AttributeError):
            weights = None
    return {
        "id": node["id"],
        "layer": node.get("layer"),
        "d_in": node.get("d_in"),
        "d_sae": node.get("d_sae"),
        "architecture": node.get("architecture"),
        "config_sha256": hashlib.sha256(config.encode()).hexdigest()
        if isinstance(config, str)
        else None,
        "weights_sha256": weights,
        "model": model_provenance(model),
    }


def model_provenance(model: dict[str, Any]) -> dict[str, Any]:
    """targets.json's `model`: `id` is the model's name, `checkpoint_hash` its weights' hash.

    (:Model) nodes are keyed by checkpoint hash (`id`) and carry the name in `name`; nodes
    written before that were keyed by name and have no `name`, and read the same here.
    """
    if model.get("name") is None:  # keyed by name
        return {k: model.get(k) for k in ("id", "version", "checkpoint_hash")}
    return {
        "id": model["name"],
        "version": model.get("version"),
        "checkpoint_hash": model.get("checkpoint_hash") or model.get("id"),
    }


def centrality_settings(session: AnalysisSession, sae: str, config: TargetsConfig) -> dict:
    """The PageRank parameters both labels were scored with; they must agree, or the two
    scores are not on one scale."""
    rows = session.records(CENTRALITY_SETTINGS, labels=[config.up, config.down], sae=sae)
    missing = [r["name"] for r in rows if not r["scored"]]
    if missing:
        flags = " ".join(f"--label {name}" for name in (config.up, config.down))
        raise AnalysisError(
            f"no PageRank scores for label(s) {', '.join(map(repr, missing))} of SAE {sae!r}: "
            f"run `hsg analyze pagerank --sae {sae} {flags}` first"
        )
    by_label = {r["name"]: r for r in rows}
    up, down = by_label[config.up]["settings"], by_label[config.down]["settings"]
    if up != down:
        raise AnalysisError(
            f"labels {config.up!r} and {config.down!r} were scored with different PageRank "
            f"parameters ({up} vs {down}); rerun `hsg analyze pagerank` with both labels"
        )
    return {**up, "computed": {name: r["computed"] for name, r in by_label.items()}}


def compute_targets(
    session: AnalysisSession, sae: str | None, config: TargetsConfig
) -> TargetsReport:
    sae_id = resolve_sae(session, sae)
    centrality = centrality_settings(session, sae_id, config)
    provenance = sae_provenance(session, sae_id)
    rows = session.named(
        "differential_centrality",
        sae=sae_id,
        up=config.up,
        down=config.down,
        min_support=config.min_support,
        pseudo_count=config.pseudo_count,
        top=config.top,
    )
    if not rows:
        raise AnalysisError(
            f"no feature has support >= {config.min_support} in {config.up!r} or "
            f"{config.down!r}; lower --min-support"
        )
    candidates = rows[0]["candidates"]
    warnings = []
    if config.top > candidates:
        warnings.append(
            f"--top {config.top} exceeds the {candidates} candidate features "
            f"(support >= {config.min_support}); returning all of them"
        )
    targets = [
        Target(
            sae=sae_id,
            layer=provenance["layer"],
            **{k: row[k] for k in COLUMNS if k not in ("sae", "layer")},
        )
        for row in rows
    ]
    return TargetsReport(
        sae=provenance,
        parameters={**config.to_dict(), "centrality": centrality},
        candidates=candidates,
        targets=targets,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        warnings=warnings,
    )
