"""What the integrity and crash tests share: a tiny encoder/SAE pair and a graph fingerprint.

The fingerprint of a graph is its counts plus, per feature, the number and the sum of its
activations: a shifted or doubled activation changes it even when the counts agree.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hsg import api


def tiny_pair(root: Path, *, seed: int, d_sae: int) -> dict:
    """A tiny NT v2 and an untrained SAE of its layer 1 that records the checkpoint."""
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    model = api.make_tiny_model(root / "model", "v2", seed=seed)
    encoder = api.load_encoder(model, device="cpu")
    torch.manual_seed(0)
    cfg = SAEConfig(
        d_in=encoder.hidden_size,
        d_sae=d_sae,
        layer=1,
        model_id=encoder.model_id,
        encoder_checkpoint_hash=encoder.checkpoint_hash,
    )
    SparseAutoencoder(cfg).save(root / "sae")
    return {"root": root, "model": model, "sae": root / "sae", "encoder": encoder}


def fingerprint(driver) -> dict:
    from hsg.graph.statements import COUNTS

    counts = dict(driver.execute_query(COUNTS).records[0])
    rows = driver.execute_query(
        "MATCH (f:Feature) OPTIONAL MATCH (:Sequence)-[a:ACTIVATES]->(f) "
        "RETURN f.id AS id, count(a) AS n, round(sum(a.activation), 4) AS total ORDER BY id"
    ).records
    # the node labels of sequences and features with their counts: Label_<name> / SAE_<id>
    # included (run nodes are left out: a resumed ingest has two IngestRun nodes)
    labels = driver.execute_query(
        "MATCH (n) WHERE n:Sequence OR n:Feature UNWIND labels(n) AS label "
        "RETURN label, count(*) AS n ORDER BY label"
    ).records
    return {
        "counts": counts,
        "features": [(r["id"], r["n"], r["total"]) for r in rows],
        "node_labels": [(r["label"], r["n"]) for r in labels],
    }
