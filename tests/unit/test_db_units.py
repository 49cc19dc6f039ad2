"""Pieces of the database layer that need no server."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg import __version__
from hsg.cli import cli
from hsg.db import server
from hsg.db.cypher import list_queries, split_statements
from hsg.db.errors import DatabaseError
from hsg.db.schema import schema_statements
from hsg.db.settings import ConnectionSettings, password_path


def test_version_and_help():
    runner = CliRunner()
    assert __version__ in runner.invoke(cli, ["--version"]).output
    for args in (["--help"], ["db", "--help"], ["db", "start", "--help"], ["db", "init", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_split_statements_ignores_comments():
    text = "// header\nCREATE INDEX a IF NOT EXISTS\n  FOR (n:X) ON (n.p);\n// c\nRETURN 1;\n"
    assert split_statements(text) == [
        "CREATE INDEX a IF NOT EXISTS\n  FOR (n:X) ON (n.p)",
        "RETURN 1",
    ]


def test_schema_is_idempotent_text():
    statements = [s for _, s in schema_statements()]
    assert statements
    for statement in statements:
        if statement.startswith("DROP "):  # obsolete schema of earlier versions
            assert statement.endswith("IF EXISTS"), statement
        else:
            assert "IF NOT EXISTS" in statement, statement
    # obsolete indexes are only ever dropped: nothing writes Sequence.run, and no lookup
    # gives both a feature's SAE and its index
    for name in ("sequence_ingest_run", "feature_sae_index"):
        assert [s for s in statements if name in s] == [f"DROP INDEX {name} IF EXISTS"]


def test_queries_parse():
    for query in list_queries():
        assert query.text and query.description, query.path


def test_settings_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("NEO4J_URI", "bolt://example:1")
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    path = password_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("from-file\n")
    s = ConnectionSettings.from_env(home=tmp_path)
    assert (s.uri, s.password) == ("bolt://example:1", "from-file")
    s = ConnectionSettings.from_env(uri="bolt://cli:2", password="cli", home=tmp_path)
    assert (s.uri, s.password) == ("bolt://cli:2", "cli")
    assert "cli" not in s.describe().replace("bolt://cli", "")


def test_password_file_is_private(tmp_path):
    path = tmp_path / "conf" / "pw"
    server._write_secret(path, "secret")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_java_missing_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(server, "JVM_ROOTS", (tmp_path / "none",))
    with pytest.raises(DatabaseError, match="Java is missing"):
        server.find_java(server.ServerConfig(home=tmp_path))


def test_unsupported_java_is_named(monkeypatch, tmp_path):
    fake = tmp_path / "jdk" / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\"' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(server, "JVM_ROOTS", ())
    with pytest.raises(DatabaseError, match="Java 11"):
        server.find_java(server.ServerConfig(home=tmp_path))


def test_conf_binds_loopback_and_unrestricts_gds(tmp_path):
    cfg = server.ServerConfig(home=tmp_path, bolt_port=17687, http_port=17474)
    text = server.write_conf(cfg).read_text()
    assert "server.default_listen_address=127.0.0.1" in text
    assert "server.bolt.listen_address=:17687" in text
    assert "dbms.security.procedures.unrestricted=gds.*" in text


def test_status_when_down_exits_nonzero(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["db", "status", "--home", str(tmp_path), "--uri", "bolt://127.0.0.1:1", "--password", "x"],
    )
    assert result.exit_code == 1
    assert "not reachable" in result.output


def test_server_build_pins_versions():
    pom = (Path(server.server_build_dir()) / "pom.xml").read_text()
    assert "<neo4j.version>5.26." in pom and "<gds.version>2.13." in pom
