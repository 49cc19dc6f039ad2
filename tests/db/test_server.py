"""The real local server: connection, GDS, schema, restart, bad input."""

from __future__ import annotations

import networkx as nx
import pytest

from hsg.db import server
from hsg.db.connection import open_driver, open_gds, server_versions
from hsg.db.errors import DatabaseError
from hsg.db.schema import apply_schema
from hsg.db.settings import ConnectionSettings

pytestmark = pytest.mark.db


def test_connect_and_versions(driver, settings):
    info = server_versions(driver, settings.database)
    assert info["neo4j"].startswith("5.26")
    assert info["gds"].startswith("2.13")
    assert driver.execute_query("RETURN gds.version() AS v").records[0]["v"] == info["gds"]


def test_schema_applies_twice(clean_db, settings):
    first = apply_schema(clean_db, settings.database)
    second = apply_schema(clean_db, settings.database)
    assert first == second > 0
    names = {
        r["name"] for r in clean_db.execute_query("SHOW CONSTRAINTS YIELD name RETURN name").records
    }
    assert {"sequence_id", "feature_id", "label_name", "annotation_id"} <= names


def test_init_reports_conflicting_data(clean_db, settings):
    clean_db.execute_query("DROP CONSTRAINT sequence_id")
    clean_db.execute_query("CREATE (:Sequence {id: 'dup'}), (:Sequence {id: 'dup'})")
    with pytest.raises(DatabaseError, match="conflicts"):
        apply_schema(clean_db, settings.database)
    # nothing was lost: both conflicting nodes are still there for the user to inspect
    count = clean_db.execute_query("MATCH (s:Sequence {id: 'dup'}) RETURN count(s) AS c").records[
        0
    ]["c"]
    assert count == 2


def _small_graph() -> list[tuple[int, int]]:
    # every node has an out-edge, so no dangling mass: GDS and networkx agree up to scale
    return [(0, 1), (1, 2), (2, 0), (2, 3), (3, 0), (3, 4), (4, 2), (4, 5), (5, 3), (1, 5)]


def test_pagerank_matches_networkx(clean_db, settings):
    edges = _small_graph()
    clean_db.execute_query(
        "UNWIND $edges AS e MERGE (a:PRNode {k: e[0]}) MERGE (b:PRNode {k: e[1]}) "
        "CREATE (a)-[:PR_LINK]->(b)",
        edges=[list(e) for e in edges],
    )
    gds = open_gds(settings)
    try:
        graph, _ = gds.graph.project.native("pr_test", "PRNode", "PR_LINK")
        try:
            result = gds.page_rank.stream(
                graph, damping_factor=0.85, max_iterations=1000, tolerance=1e-12
            )
        finally:
            graph.drop()
        keys = {
            row["nodeId"]: row["k"]
            for row in clean_db.execute_query(
                "UNWIND $ids AS nodeId RETURN nodeId, gds.util.asNode(nodeId).k AS k",
                ids=[int(i) for i in result["nodeId"]],
            ).records
        }
    finally:
        gds.close()
    ours = {keys[int(r.nodeId)]: float(r.score) for r in result.itertuples()}
    total = sum(ours.values())
    expected = nx.pagerank(nx.DiGraph(edges), alpha=0.85, tol=1e-14, max_iter=10_000)
    diff = max(abs(ours[k] / total - expected[k]) for k in expected)
    assert diff <= 1e-6


def test_wrong_password_is_clear(settings):
    bad = ConnectionSettings(settings.uri, settings.user, "definitely-wrong", settings.database)
    with pytest.raises(DatabaseError, match="wrong user or password"):
        open_driver(bad)


def test_server_down_is_clear():
    closed = ConnectionSettings("bolt://127.0.0.1:1", "neo4j", "x", "neo4j")
    with pytest.raises(DatabaseError, match="not reachable"):
        open_driver(closed)


def _local_config() -> server.ServerConfig:
    return server.ServerConfig.from_env()


@pytest.fixture
def local_server():
    cfg = _local_config()
    if server.running_pid(cfg) is None:
        pytest.skip("the test server was not started by hsg from HSG_HOME")
    return cfg


def test_port_in_use_is_clear(local_server, tmp_path):
    cfg = server.ServerConfig.from_env(home=tmp_path / "other")
    cfg.bolt_port = local_server.bolt_port  # taken by the running test server
    cfg.http_port = local_server.http_port
    with pytest.raises(DatabaseError, match="already in use"):
        server.start(cfg)


def test_restart_keeps_data(local_server, clean_db, settings):
    clean_db.execute_query("CREATE (:Sequence {id: 'keep-me', length: 100})")
    assert server.stop(local_server)
    server.start(local_server)
    drv = open_driver(settings)
    try:
        rows = drv.execute_query("MATCH (s:Sequence {id: 'keep-me'}) RETURN s.length AS n")
        assert [r["n"] for r in rows.records] == [100]
        # the restarted server runs with the generated conf: transaction logs kept by size
        rows = drv.execute_query(
            "SHOW SETTINGS YIELD name, value WHERE name STARTS WITH 'db.tx_log.rotation' "
            "RETURN name, value"
        )
        live = {r["name"]: r["value"] for r in rows.records}
        assert live["db.tx_log.rotation.retention_policy"] == (
            f"{local_server.tx_log_retention} size"
        )
    finally:
        drv.close()


def test_status_cli_reports_versions(local_server):
    from click.testing import CliRunner

    from hsg.cli import cli

    result = CliRunner().invoke(cli, ["db", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert '"gds": "2.13' in result.output


def test_status_reports_store_and_log_sizes(local_server, clean_db):
    import json

    from click.testing import CliRunner

    from hsg.cli import cli

    clean_db.execute_query("UNWIND range(1, 200) AS i CREATE (:Sequence {id: 'size-' + i})")
    result = CliRunner().invoke(cli, ["db", "status", "--json"])
    assert result.exit_code == 0, result.output
    disk = json.loads(result.output)["disk"]
    assert disk["store_bytes"] > 0 and disk["tx_log_bytes"] > 0
    assert disk["home_bytes"] >= disk["store_bytes"] + disk["tx_log_bytes"]
    assert {"neo4j", "system"} <= set(disk["databases"])
    assert disk["tx_log_retention"] == local_server.tx_log_retention
    text = CliRunner().invoke(cli, ["db", "status"])
    assert text.exit_code == 0, text.output
    assert "disk:     store" in text.output and "transaction logs" in text.output
