"""Issue #16: Ray-encoded activation shards, loaded online and with Neo4j's bulk importer,
give the graph `hsg ingest` gives — counts, activation sums per feature, PageRank.

One local Ray (`ray.init(num_cpus=2)`) serves the module. The online load goes to the shared
test server; the bulk import stops and restarts its server, so it runs on a dedicated home
under .hsg/ on its own ports (never the shared server on 17687), stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from graph_helpers import fingerprint, tiny_pair  # noqa: E402

from hsg import api  # noqa: E402
from hsg.shards.errors import ShardError  # noqa: E402
from hsg.shards.reader import ShardSet  # noqa: E402
from hsg.shards.schema import marker_file, table_file  # noqa: E402

pytestmark = [pytest.mark.db, pytest.mark.slow]

LOCI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cisplatin" / "loci.tsv"
WINDOWS = 150
OPTIONS = {"label_column": "label", "top_k": 2}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    if not LOCI.exists():
        pytest.skip(f"{LOCI} is not there")
    root = tmp_path_factory.mktemp("shards")
    lines = LOCI.read_text().splitlines()[: WINDOWS + 1]
    # one id given twice (same sequence, another label): labels merged, encoded once
    first = lines[1].split("\t")
    lines.append("\t".join(first[:-1] + ["repeat"]))
    regions = root / "loci.tsv"
    regions.write_text("\n".join(lines) + "\n")
    pair = tiny_pair(root, seed=2, d_sae=40)
    return {**pair, "regions": regions}


def _pagerank(connection) -> dict:
    run = api.pagerank(["cisplatin_binding", "non_binding"], connection=connection)
    return {
        label.label: sorted((s.feature, round(s.pagerank, 6), s.support) for s in label.scores)
        for label in run.labels
    }


@pytest.fixture(scope="module")
def reference(assets, settings, driver):
    """What `hsg ingest` makes of the windows: fingerprint and PageRank."""
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    with api.connect() as graph:
        api.ingest(assets["regions"], assets["model"], assets["sae"], connection=graph, **OPTIONS)
        result = {"fingerprint": fingerprint(driver), "pagerank": _pagerank(graph)}
    wipe(driver, settings.database)
    return result


@pytest.fixture(scope="module")
def shards(assets, ray_local, tmp_path_factory):
    out = tmp_path_factory.mktemp("set") / "shards"
    summary = api.encode_to_shards(
        assets["regions"], assets["model"], assets["sae"], out, shard_size=50, **OPTIONS
    )
    assert summary.shards == 4 and summary.shards_written == 4
    assert summary.sequences == WINDOWS + 1 and summary.encoded == WINDOWS
    return out


def test_online_load_equals_ingest(reference, shards, clean_db):
    with api.connect() as graph:
        summary = api.load_shards(shards, connection=graph, threads=2, write_batch=32)
        assert summary.sequences_encoded == WINDOWS
        assert fingerprint(clean_db) == reference["fingerprint"]
        assert _pagerank(graph) == reference["pagerank"]
        again = api.load_shards(shards, connection=graph, threads=3)  # idempotent
    assert again.sequences_encoded == 0 and again.sequences_skipped == WINDOWS
    assert fingerprint(clean_db)["counts"] == reference["fingerprint"]["counts"]


@pytest.fixture(scope="module")
def bulk_server():
    from hsg.db import server
    from hsg.db.settings import ConnectionSettings, read_password_file

    bolt, http = _free_ports(2)
    home = Path(__file__).resolve().parents[2] / ".hsg" / "test-shards-bulk"
    cfg = server.ServerConfig.from_env(
        home=home, bolt_port=bolt, http_port=http, heap="512m", pagecache="64m"
    )
    server.start(cfg, log=lambda _msg: None)
    settings = ConnectionSettings(cfg.bolt_uri, "neo4j", read_password_file(cfg.home))
    try:
        yield cfg, settings
    finally:
        server.stop(cfg)


def test_bulk_load_equals_ingest(reference, shards, bulk_server):
    from hsg.db.errors import DatabaseError

    cfg, settings = bulk_server
    with api.connection_for(settings) as before:
        summary = api.load_shards(shards, mode="bulk", server=cfg, connection=before,
                                  overwrite=True)  # fmt: skip
    assert summary.sequences_encoded == WINDOWS
    connection = api.connection_for(settings)  # one opened before holds the old store's bookmarks
    try:
        assert fingerprint(connection.driver) == reference["fingerprint"]
        assert _pagerank(connection) == reference["pagerank"]
        # a database with nodes is replaced only when asked; the refusal changes nothing
        with pytest.raises(DatabaseError, match="--overwrite"):
            api.load_shards(shards, mode="bulk", server=cfg, connection=connection)
        assert fingerprint(connection.driver) == reference["fingerprint"]
    finally:
        connection.close()


def test_an_interrupted_ray_run_resumes(assets, shards, ray_local, tmp_path):
    """A worker killed mid-shard leaves its files without a marker (or a temporary file):
    the next run of the same command redoes that shard only and keeps the others."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (copy / marker_file(2)).unlink()
    (copy / table_file("activations", 2)).write_bytes(b"half a file")
    (copy / ".activations-00002.parquet.tmp").write_bytes(b"left by the kill")
    kept = {p.name: p.stat().st_mtime_ns for p in copy.glob("*-0000[013].parquet")}
    summary = api.encode_to_shards(
        assets["regions"], assets["model"], assets["sae"], copy, shard_size=50, **OPTIONS
    )
    assert (summary.shards_written, summary.shards_skipped) == (1, 3)
    assert {p.name: p.stat().st_mtime_ns for p in copy.glob("*-0000[013].parquet")} == kept
    assert ShardSet(copy).validate() == ShardSet(shards).validate()
    assert ShardSet(copy).read(2).activations.equals(ShardSet(shards).read(2).activations)


def test_bad_shard_sets_are_refused_before_anything_is_written(assets, shards, clean_db, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(shards, corrupt)
    last = corrupt / table_file("sequences", 3)
    last.write_bytes(last.read_bytes()[:-10])
    with api.connect() as graph:
        with pytest.raises(ShardError, match="corrupt"):
            api.load_shards(corrupt, connection=graph)
        with pytest.raises(ShardError, match="no manifest.json"):
            api.load_shards(tmp_path, connection=graph)
    assert sum(fingerprint(clean_db)["counts"].values()) == 0  # not even the Model node

    # another SAE into the same folder: refused before Ray is asked to do anything
    other = tiny_pair(tmp_path / "other", seed=3, d_sae=40)
    with pytest.raises(ShardError, match="other inputs or parameters"):
        api.encode_to_shards(assets["regions"], other["model"], other["sae"], shards,
                             shard_size=50, **OPTIONS)  # fmt: skip

    from hsg.cli import cli

    env = {k: v for k, v in os.environ.items()}
    result = CliRunner().invoke(cli, ["load", str(corrupt)], env=env)
    assert result.exit_code == 1 and "corrupt" in result.output


def test_input_too_long_for_the_model_is_refused_before_any_shard(assets, ray_local, tmp_path):
    from hsg.regions.records import InputError

    regions = tmp_path / "long.tsv"
    lines = assets["regions"].read_text().splitlines()[:3]
    cols = lines[2].split("\t")
    cols[0], cols[5] = "too-long", "ACGT" * 4000  # 16 kb: > 2048 tokens of the tiny model
    cols[3] = str(int(cols[2]) + 16000)
    regions.write_text("\n".join([*lines, "\t".join(cols)]) + "\n")
    out = tmp_path / "shards"
    with pytest.raises(InputError, match="too long.*--window"):
        api.encode_to_shards(regions, assets["model"], assets["sae"], out, shard_size=2, **OPTIONS)
    assert not out.exists() or not any(out.iterdir())


def test_the_command_line_resumes_a_set_and_loads_it(assets, shards, clean_db, tmp_path):
    from hsg.cli import cli

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    runner = CliRunner()
    result = runner.invoke(cli, [
        "ingest", str(assets["regions"]), "--model", str(assets["model"]), "--sae",
        str(assets["sae"]), "--label-column", "label", "--top-k", "2", "--shards", str(copy),
        "--shard-size", "50", "--no-load",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0 written, 4 already complete" in result.output
    result = runner.invoke(cli, ["load", str(copy), "--threads", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sequences_encoded"] == WINDOWS


def test_a_killed_ray_run_resumes(assets, ray_local, tmp_path):
    """The whole Ray run killed for real (SIGKILL to the driver's process group: driver,
    raylet, actors) while it writes shards: rerunning the same command writes only the
    missing shards, keeps the complete ones untouched, and the set equals an uninterrupted
    run's."""
    import signal
    import subprocess
    import time

    lines = LOCI.read_text().splitlines()[: 600 + 1]
    regions = tmp_path / "loci600.tsv"
    regions.write_text("\n".join(lines) + "\n")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hsg", "ingest", str(regions), "--model",
           str(assets["model"]), "--sae", str(assets["sae"]), "--label-column", "label",
           "--top-k", "2", "--shards", str(out), "--shard-size", "10", "--actors", "2",
           "--no-load"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True, env=dict(os.environ))  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("shard-*.json")):  # the first complete shard
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    complete = [i for i in range(60) if ShardSet(out).is_complete(i)]
    assert 0 < len(complete) < 60, "the kill came too late to interrupt the run"
    kept = {p.name: p.stat().st_mtime_ns for i in complete for p in out.glob(f"*-{i:05d}.*")}

    summary = api.encode_to_shards(regions, assets["model"], assets["sae"], out,
                                   shard_size=10, **OPTIONS)  # fmt: skip
    assert (summary.shards_written, summary.shards_skipped) == (60 - len(complete), len(complete))
    assert {p.name: p.stat().st_mtime_ns for i in complete
            for p in out.glob(f"*-{i:05d}.*")} == kept  # fmt: skip
    whole = api.encode_to_shards(regions, assets["model"], assets["sae"], tmp_path / "whole",
                                 shard_size=10, **OPTIONS)  # fmt: skip
    assert whole.shards_written == 60
    resumed, reference = ShardSet(out), ShardSet(tmp_path / "whole")
    assert resumed.validate() == reference.validate()
    for i in range(60):
        assert resumed.read(i).activations.equals(reference.read(i).activations), i
        assert resumed.read(i).sequences.equals(reference.read(i).sequences), i
