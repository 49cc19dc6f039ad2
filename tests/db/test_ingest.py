"""`hsg ingest` end to end against the real server.

Expected counts are computed independently of the pipeline: the encoder and SAE are run
directly on the fixture, and the annotators' hits are counted, then compared with what
the database holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from hsg.cli import cli
from hsg.regions.motifs import find_g_quadruplexes
from hsg.regions.readers import read_records
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

pytestmark = pytest.mark.db

COUNT_KEYS = (
    "sequences",
    "features",
    "labels",
    "activates",
    "has_label",
    "has_motif",
    "encoded_by",
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from hsg.models.encoder import load_encoder
    from hsg.models.tiny import make_tiny
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    root = tmp_path_factory.mktemp("ingest")
    make_tiny(root / "model", "v2", seed=1)
    encoder = load_encoder(root / "model", device="cpu")
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=encoder.hidden_size, d_sae=48, model_id=encoder.model_id, layer=1)
    sae = SparseAutoencoder(cfg)
    sae.save(root / "sae")
    data = write_tsv(make_synthetic_dataset(n=40, seed=3), root / "small.tsv")
    return {
        "root": root,
        "model": root / "model",
        "sae": root / "sae",
        "data": data,
        "encoder": encoder,
        "sae_obj": sae,
    }


def expected_counts(assets, top_k: int = 1) -> dict[str, int]:
    records = list(read_records(assets["data"]))
    enc, sae = assets["encoder"], assets["sae_obj"]
    out = enc.embed([r.sequence for r in records], 1)
    with torch.inference_mode():
        z = sae.encode(out.hidden[out.content_mask])
    active = (torch.topk(z, top_k, dim=-1).values > 0).sum().item()
    labels = {name for r in records for name in r.labels}
    return {
        "sequences": len(records),
        "features": sae.cfg.d_sae,
        "labels": len(labels),
        "activates": int(active),
        "has_label": sum(len(r.labels) for r in records),
        "has_motif": sum(len(find_g_quadruplexes(r.sequence)) for r in records),
        "encoded_by": len(records),
    }


def incomplete_sequences(driver) -> int:
    """Sequences whose stored activations differ from what their commit mark announces."""
    return driver.execute_query(
        "MATCH (s:Sequence)-[e:ENCODED_BY]->() "
        "WHERE COUNT { (s)-[:ACTIVATES]->() } <> e.activations RETURN count(s) AS c"
    ).records[0]["c"]


def ingest_args(assets, *extra) -> list[str]:
    return [
        "ingest",
        str(assets["data"]),
        "--model",
        str(assets["model"]),
        "--sae",
        str(assets["sae"]),
        *extra,
    ]


def db_counts(driver) -> dict[str, int]:
    from hsg.graph.statements import COUNTS

    row = driver.execute_query(COUNTS).records[0]
    return {k: row[k] for k in COUNT_KEYS}


def test_counts_exact_and_rerun_idempotent(clean_db, assets):
    runner = CliRunner()
    result = runner.invoke(cli, ingest_args(assets))
    assert result.exit_code == 0, result.output
    expected = expected_counts(assets)
    assert db_counts(clean_db) == expected
    # every stored sequence has exactly the activations its commit mark announces
    assert incomplete_sequences(clean_db) == 0
    again = runner.invoke(cli, ingest_args(assets))
    assert again.exit_code == 0, again.output
    assert "40 already present" in again.output
    assert db_counts(clean_db) == expected


def test_top_k_and_provenance(clean_db, assets):
    result = CliRunner().invoke(cli, ingest_args(assets, "--top-k", "3", "--no-g4"))
    assert result.exit_code == 0, result.output
    expected = expected_counts(assets, top_k=3)
    assert db_counts(clean_db)["activates"] == expected["activates"]
    ranks = {
        r["rank"]
        for r in clean_db.execute_query(
            "MATCH ()-[a:ACTIVATES]->() RETURN DISTINCT a.rank AS rank"
        ).records
    }
    assert ranks <= {0, 1, 2} and 0 in ranks
    run = clean_db.execute_query(
        "MATCH (r:IngestRun)-[:USED]->(x:SAE)-[:READS]->(m:Model) "
        "RETURN r.status AS status, r.parameters AS params, x.layer AS layer, "
        "m.checkpoint_hash AS hash"
    ).records[0]
    assert run["status"] == "finished" and run["layer"] == 1
    assert '"top_k": 3' in run["params"] and len(run["hash"]) == 64


def test_two_checkpoints_in_same_named_directories_are_two_models(clean_db, assets, tmp_path):
    """Model nodes are keyed by checkpoint hash, not by the directory name (`model` here for
    both), so each SAE reads its own model and neither model's provenance is overwritten."""
    from hsg.models.encoder import load_encoder
    from hsg.models.tiny import make_tiny
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    make_tiny(tmp_path / "elsewhere" / "model", "v2", seed=2)
    other = load_encoder(tmp_path / "elsewhere" / "model", device="cpu")
    first = assets["encoder"]
    assert other.model_id == first.model_id == "model"
    assert other.checkpoint_hash != first.checkpoint_hash
    torch.manual_seed(1)
    cfg = SAEConfig(d_in=other.hidden_size, d_sae=48, model_id=other.model_id, layer=1)
    other_sae = SparseAutoencoder(cfg)
    other_sae.save(tmp_path / "other_sae")

    runner = CliRunner()
    assert runner.invoke(cli, ingest_args(assets)).exit_code == 0
    args = ["ingest", str(assets["data"]), "--model", str(tmp_path / "elsewhere" / "model")]
    result = runner.invoke(cli, [*args, "--sae", str(tmp_path / "other_sae")])
    assert result.exit_code == 0, result.output

    rows = clean_db.execute_query(
        "MATCH (m:Model) "
        "RETURN m.id AS id, m.name AS name, m.checkpoint_hash AS hash, m.version AS version, "
        "       COLLECT { MATCH (x:SAE)-[:READS]->(m) RETURN x.id } AS saes "
        "ORDER BY id"
    ).records
    got = {r["id"]: (r["name"], r["hash"], r["version"], r["saes"]) for r in rows}
    assert got == {
        first.checkpoint_hash: ("model", first.checkpoint_hash, "v2", [assets["sae_obj"].sae_id]),
        other.checkpoint_hash: ("model", other.checkpoint_hash, "v2", [other_sae.sae_id]),
    }
    # the same checkpoint again (here: from the same directory) is the same node
    assert runner.invoke(cli, ingest_args(assets)).exit_code == 0
    count = clean_db.execute_query("MATCH (m:Model) RETURN count(m) AS c").records[0]["c"]
    assert count == 2


def test_new_label_on_existing_sequences(clean_db, assets):
    runner = CliRunner()
    assert runner.invoke(cli, ingest_args(assets)).exit_code == 0
    before = db_counts(clean_db)
    result = runner.invoke(cli, ingest_args(assets, "--label", "replicate_2"))
    assert result.exit_code == 0, result.output
    after = db_counts(clean_db)
    assert after["labels"] == before["labels"] + 1
    assert after["has_label"] == before["has_label"] + before["sequences"]
    assert {k: after[k] for k in ("activates", "sequences", "encoded_by")} == {
        k: before[k] for k in ("activates", "sequences", "encoded_by")
    }


def test_kill_and_resume(clean_db, assets, settings, tmp_path):
    big = write_tsv(make_synthetic_dataset(n=1500, seed=5), tmp_path / "big.tsv")
    args = [
        sys.executable,
        "-m",
        "hsg",
        "ingest",
        str(big),
        "--model",
        str(assets["model"]),
        "--sae",
        str(assets["sae"]),
        "--batch-size",
        "16",
        "--write-batch",
        "16",
        "--no-validate",
    ]
    env = dict(os.environ, NEO4J_URI=settings.uri, NEO4J_PASSWORD=settings.password)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        stored = clean_db.execute_query("MATCH ()-[e:ENCODED_BY]->() RETURN count(e) AS c").records[
            0
        ]["c"]
        if stored >= 100:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "ingest finished before it could be killed: " + str(
        proc.stderr.read()[-2000:]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = db_counts(clean_db)
    assert 0 < partial["encoded_by"] < 1500
    # nothing half-written: every encoded sequence has all of its activations
    assert incomplete_sequences(clean_db) == 0
    result = CliRunner().invoke(
        cli, ["ingest", str(big), "--model", str(assets["model"]), "--sae", str(assets["sae"])]
    )
    assert result.exit_code == 0, result.output
    final = db_counts(clean_db)
    assert final["encoded_by"] == final["sequences"] == 1500
    bad = clean_db.execute_query(
        "MATCH (s:Sequence) WHERE COUNT { (s)-[:ENCODED_BY]->() } <> 1 "
        "OR COUNT { (s)-[:ACTIVATES]->() } <> "
        "   COALESCE([(s)-[e:ENCODED_BY]->() | e.activations][0], -1) RETURN count(s) AS c"
    ).records[0]["c"]
    assert bad == 0


GOOD_ROWS = "".join(f"ok{i}\tACGTACGTACGT\t1\n" for i in range(50))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # the bad row comes after 50 good ones: validation runs before the first write
        ("id\tsequence\tlabel\n" + GOOD_ROWS + "s1\tACGTXACGT\t1\n", "invalid"),
        ("id\tsequence\tlabel\n", "no sequences"),
        ("id\tlabel\ns1\t1\n", "sequence"),
    ],
)
def test_bad_input_stores_nothing(clean_db, assets, tmp_path, content, message):
    runner = CliRunner()
    assert runner.invoke(cli, ingest_args(assets)).exit_code == 0
    before = db_counts(clean_db)
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    result = runner.invoke(
        cli, ["ingest", str(bad), "--model", str(assets["model"]), "--sae", str(assets["sae"])]
    )
    assert result.exit_code != 0
    assert message in result.output.lower()
    assert db_counts(clean_db) == before


def test_bed_unknown_chromosome(clean_db, assets, tmp_path):
    ref = tmp_path / "ref.fa"
    ref.write_text(">chrA\n" + "ACGT" * 50 + "\n")
    bed = tmp_path / "r.bed"
    bed.write_text("chrA\t0\t60\nchrZ\t0\t60\n")
    result = CliRunner().invoke(
        cli,
        [
            "ingest",
            str(bed),
            "--reference",
            str(ref),
            "--model",
            str(assets["model"]),
            "--sae",
            str(assets["sae"]),
        ],
    )
    assert result.exit_code != 0
    assert "chrZ" in result.output
    assert db_counts(clean_db)["sequences"] == 0


def test_sae_of_wrong_width(clean_db, assets, tmp_path):
    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    SparseAutoencoder(SAEConfig(d_in=17, d_sae=8, layer=1)).save(tmp_path / "wrong")
    result = CliRunner().invoke(
        cli,
        [
            "ingest",
            str(assets["data"]),
            "--model",
            str(assets["model"]),
            "--sae",
            str(tmp_path / "wrong"),
        ],
    )
    assert result.exit_code != 0
    assert "17" in result.output
    assert db_counts(clean_db)["sequences"] == 0


def test_wrong_password(clean_db, assets):
    result = CliRunner().invoke(cli, ingest_args(assets, "--password", "not-the-password"))
    assert result.exit_code != 0
    assert "wrong user or password" in result.output
    assert db_counts(clean_db)["sequences"] == 0


def test_dry_run_writes_nothing(clean_db, assets):
    result = CliRunner().invoke(cli, ingest_args(assets, "--dry-run"))
    assert result.exit_code == 0, result.output
    assert "would write 40 sequences" in result.output
    assert db_counts(clean_db)["sequences"] == 0


def test_sequence_too_long_for_the_model(clean_db, assets, tmp_path):
    long = tmp_path / "long.tsv"
    # v2 takes 2048 tokens with <cls>: 2047 six-mers = 12,282 bases fit, one more 6-mer does not
    long.write_text(
        "id\tsequence\tlabel\nshort\tACGTACGTACGT\t1\ntoolong\t" + "ACGTAC" * 2048 + "\t0\n"
    )
    result = CliRunner().invoke(
        cli, ingest_args(assets)[:1] + [str(long)] + ingest_args(assets)[2:]
    )
    assert result.exit_code != 0
    assert "toolong" in result.output and "too long" in result.output
    assert db_counts(clean_db)["sequences"] == 0
