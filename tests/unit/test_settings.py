"""Connection settings and the local server's process and file handling, without a server.

Issue #12: a mistyped NEO4J_URI is one line, options beat the environment, the initial
password never reaches a command line, the home is private, and a pid file is not trusted.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg.cli import cli
from hsg.db import server
from hsg.db.errors import DatabaseError
from hsg.db.settings import ConnectionSettings, password_path

BAD_URIS = ["http://localhost:7474", "localhost:7687", "garbage", "bolt://", "bolt://h:port"]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No NEO4J_* or HSG_* from the caller's shell (scripts/test.sh sets some)."""
    for name in list(os.environ):
        if name.startswith(("NEO4J_", "HSG_BOLT", "HSG_HTTP")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HSG_HOME", str(tmp_path / "home"))


# ------------------------------------------------------------------------ URI (item 10)


@pytest.mark.parametrize("uri", BAD_URIS)
def test_bad_uri_is_named_with_an_example(uri):
    with pytest.raises(DatabaseError) as err:
        ConnectionSettings(uri=uri)
    message = str(err.value)
    assert repr(uri) in message and "bolt://127.0.0.1:7687" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "uri",
    ["bolt://127.0.0.1:7687", "bolt+s://h", "bolt+ssc://h:1", "neo4j://h", "neo4j+s://x.io"],
)
def test_good_uris_pass(uri):
    assert ConnectionSettings(uri=uri).uri == uri


@pytest.mark.parametrize("uri", BAD_URIS)
@pytest.mark.parametrize(
    "args",
    [
        ["db", "status"],
        ["db", "init"],
        ["targets", "--up", "a", "--down", "b"],
        ["analyze", "pagerank", "--label", "a"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_bad_uri_is_one_line_from_the_cli(clean_env, monkeypatch, uri, args):
    monkeypatch.setenv("NEO4J_URI", uri)
    monkeypatch.setenv("NEO4J_PASSWORD", "not-used-here")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, DatabaseError)  # handled, not raised
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert repr(uri) in lines[0] and "Traceback" not in result.output


# ------------------------------------------------------------------ precedence (item 13)


def _status_uri(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["db", "status", "--json", "--password", "x", *args])
    assert result.exit_code == 1  # nothing listens on port 1 or 2
    return json.loads(result.stdout)["uri"]


def test_status_bolt_port_option_beats_neo4j_uri(clean_env, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    assert _status_uri(["--bolt-port", "2"]) == "bolt://127.0.0.1:2"
    # without the option the environment decides; NEO4J_URI over HSG_BOLT_PORT as before
    monkeypatch.setenv("HSG_BOLT_PORT", "2")
    assert _status_uri([]) == "bolt://127.0.0.1:1"
    monkeypatch.delenv("NEO4J_URI")
    assert _status_uri([]) == "bolt://127.0.0.1:2"
    # --uri is the most explicit of all
    assert _status_uri(["--bolt-port", "2", "--uri", "bolt://127.0.0.1:1"]) == "bolt://127.0.0.1:1"


def test_connection_options_beat_the_environment(clean_env, monkeypatch):
    import click

    from hsg.cli.db_options import connection_options

    seen = {}

    @click.command()
    @connection_options
    def probe(settings):
        seen["settings"] = settings

    monkeypatch.setenv("NEO4J_URI", "bolt://env:1")
    monkeypatch.setenv("NEO4J_USER", "env-user")
    monkeypatch.setenv("NEO4J_PASSWORD", "env-password")
    monkeypatch.setenv("NEO4J_DATABASE", "envdb")
    runner = CliRunner()
    assert runner.invoke(probe, []).exit_code == 0
    from_env = ConnectionSettings("bolt://env:1", "env-user", "env-password", "envdb")
    assert seen["settings"] == from_env
    args = ["--uri", "bolt://opt:2", "--user", "u", "--password", "p", "--database", "optdb"]
    assert runner.invoke(probe, args).exit_code == 0
    assert seen["settings"] == ConnectionSettings("bolt://opt:2", "u", "p", "optdb")


# ---------------------------------------------------------- initial password (item 5)


def _fake_java(tmp_path: Path) -> Path:
    """A `java` that logs its arguments and the content of every @file argument it gets."""
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    log = tmp_path / "java-calls.jsonl"
    java.write_text(
        f"#!{sys.executable}\n"
        "import json, os, stat, sys\n"
        "def read(path):\n"
        "    return open(path, encoding='utf-8').read(), stat.S_IMODE(os.stat(path).st_mode)\n"
        "files = {a: read(a[1:]) for a in sys.argv[1:] if a.startswith('@')}\n"
        "call = {'argv': sys.argv, 'files': files, 'umask': os.umask(0)}\n"
        f"with open({str(log)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps(call) + '\\n')\n"
    )
    java.chmod(0o755)
    return java


def _calls(tmp_path: Path) -> list[dict]:
    lines = (tmp_path / "java-calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "password", ["pl\"a\\in #'pass", "é ü ✓ secret-words", "@looks-like-a-file"]
)
def test_initial_password_stays_off_the_command_line(tmp_path, monkeypatch, password):
    java = _fake_java(tmp_path)
    cfg = server.ServerConfig(home=tmp_path / "home")
    monkeypatch.setenv("NEO4J_PASSWORD", password)
    stored, known = server.ensure_password(cfg, java, log=lambda _msg: None)
    assert (stored, known) == (password, True)
    [call] = _calls(tmp_path)
    assert not any(password in arg for arg in call["argv"])
    assert call["argv"][-3:-1] == ["dbms", "set-initial-password"]
    [(argfile, (content, mode))] = call["files"].items()
    assert mode == 0o600 and call["umask"] == 0o077
    # picocli's @file format: one double-quoted argument, backslash escapes \ and "
    assert content.startswith('"') and content.rstrip("\n").endswith('"')
    body = content.rstrip("\n")[1:-1]
    assert body.replace('\\"', '"').replace("\\\\", "\\") == password
    assert not Path(argfile[1:]).exists()  # removed once the tool is done
    assert password_path(cfg.home).read_text() == password + "\n"


def test_multiline_password_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO4J_PASSWORD", "first-line\nsecond")
    with pytest.raises(DatabaseError, match="one line"):
        server.ensure_password(server.ServerConfig(home=tmp_path), _fake_java(tmp_path))


def test_password_for_an_initialised_home_is_unchecked_until_start(tmp_path, monkeypatch):
    """The file is gone: NEO4J_PASSWORD comes back unverified and nothing is written."""
    home = tmp_path / "home"
    (home / "data" / "databases" / "system").mkdir(parents=True)
    monkeypatch.setenv("NEO4J_PASSWORD", "maybe-the-password")
    result = server.ensure_password(server.ServerConfig(home=home), _fake_java(tmp_path))
    assert result == ("maybe-the-password", False)
    assert not password_path(home).exists()
    assert not (tmp_path / "java-calls.jsonl").exists()


# ------------------------------------------------------------------ private home (item 6)


def _exposed(home: Path) -> list[str]:
    paths = [home, *home.rglob("*")]
    return [
        f"{p} {stat.filemode(p.lstat().st_mode)}"
        for p in paths
        if not p.is_symlink() and p.lstat().st_mode & 0o077
    ]


def test_make_private_takes_group_and_world_access_away(tmp_path):
    home = tmp_path / "home"
    (home / "data" / "databases").mkdir(parents=True)
    (home / "data" / "databases" / "store").write_text("x")
    tool = home / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    os.chmod(home / "data", 0o777)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (home / "link").symlink_to(elsewhere)
    assert _exposed(home)
    server.make_private(home)
    assert _exposed(home) == []
    assert stat.S_IMODE(tool.stat().st_mode) == 0o700  # executable stays executable
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755  # a link's target is not touched


def test_conf_is_private(tmp_path):
    cfg = server.ServerConfig(home=tmp_path / "home")
    server.write_conf(cfg)
    assert _exposed(cfg.home / "conf") == []


# ----------------------------------------------------------------- pid files (item 7)


def _write_pid(cfg: server.ServerConfig, pid: int) -> None:
    server.pid_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    server.pid_file(cfg).write_text(str(pid))


@pytest.fixture
def fake_server(tmp_path):
    """A process whose command line looks like `start`'s for the home tmp_path/home."""
    home = (tmp_path / "home").resolve()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(120)",
            server.ENTRY_POINT,
            f"--home-dir={home}",
            f"--config-dir={home / 'conf'}",
        ]
    )
    cfg = server.ServerConfig(home=home)
    _write_pid(cfg, proc.pid)
    yield cfg, proc
    proc.kill()
    proc.wait()


def test_pid_file_of_a_copied_home_is_not_trusted(fake_server, tmp_path):
    cfg, proc = fake_server
    copy = server.ServerConfig(home=tmp_path / "copy")
    _write_pid(copy, proc.pid)
    assert server.running_pid(cfg) == proc.pid
    assert server.running_pid(copy) is None
    messages = []
    assert server.stop(copy, log=messages.append) is False
    assert proc.poll() is None  # the original keeps running
    assert "not the Neo4j server" in messages[0]
    result = CliRunner().invoke(cli, ["db", "stop", "--home", str(copy.home)])
    assert result.exit_code == 0 and "was not running" in result.output
    assert proc.poll() is None
    assert server.stop(cfg, timeout=10)  # its own home stops it
    assert proc.wait(timeout=10) is not None


def test_pid_file_naming_another_program_is_not_trusted(tmp_path):
    cfg = server.ServerConfig(home=tmp_path / "home")
    _write_pid(cfg, os.getpid())  # pytest: alive, but not Neo4j
    assert server.running_pid(cfg) is None
    assert server.stop(cfg, log=lambda _msg: None) is False


# --------------------------------------------------------- stale ingest runs (item 15)


def test_process_state():
    from hsg.db.runs import process_state

    host = socket.gethostname()
    assert process_state(host, os.getpid()) == "running"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    time.sleep(0.1)
    assert process_state(host, gone.pid) == "stale"
    assert process_state("another-host", os.getpid()) == "unknown"
    assert process_state(None, None) == "unknown"


# ------------------------------------------- one way to name the server (issue #17, part 5)


@pytest.mark.parametrize(
    ("typed", "env", "expected"),
    [
        ({}, {}, "bolt://127.0.0.1:7687"),
        ({}, {"HSG_BOLT_PORT": "2"}, "bolt://127.0.0.1:2"),
        ({}, {"HSG_BOLT_PORT": "2", "NEO4J_URI": "bolt://h:1"}, "bolt://h:1"),
        ({"bolt_port": 3}, {"HSG_BOLT_PORT": "2", "NEO4J_URI": "bolt://h:1"}, "bolt://127.0.0.1:3"),
        ({"uri": "bolt://u:4", "bolt_port": 3}, {"NEO4J_URI": "bolt://h:1"}, "bolt://u:4"),
    ],
)
def test_resolve_uri_is_one_rule(clean_env, monkeypatch, typed, env, expected):
    from hsg.db.settings import resolve_uri

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_uri(**typed) == expected
    assert ConnectionSettings.from_env(**typed).uri == expected


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_bad_bolt_port_is_one_line(clean_env, monkeypatch, value):
    monkeypatch.setenv("HSG_BOLT_PORT", value)
    monkeypatch.setenv("NEO4J_PASSWORD", "not-used-here")
    with pytest.raises(DatabaseError, match="HSG_BOLT_PORT"):
        ConnectionSettings.from_env()
    for args in (["analyze", "pagerank", "--label", "a"], ["db", "status"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and repr(value) in lines[0], result.output


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "pagerank", "--label", "a"],
        ["db", "init"],
        ["db", "check"],
        ["targets", "--up", "a", "--down", "b"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_command_goes_to_hsg_bolt_port(clean_env, monkeypatch, args):
    """The bug: analysis read only NEO4J_URI (→ 7687) while status named HSG_BOLT_PORT's."""
    monkeypatch.setenv("NEO4J_PASSWORD", "not-used-here")
    monkeypatch.setenv("HSG_BOLT_PORT", "1")  # nothing listens on port 1
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert "127.0.0.1:1" in result.output and "7687" not in result.output, result.output
    assert _status_uri([]) == "bolt://127.0.0.1:1"
    result = CliRunner().invoke(cli, [*args, "--bolt-port", "2"])
    assert "127.0.0.1:2" in result.output, result.output


def test_api_connect_and_analysis_resolve_like_the_cli(clean_env, monkeypatch):
    from hsg import api

    monkeypatch.setenv("NEO4J_PASSWORD", "not-used-here")
    monkeypatch.setenv("HSG_BOLT_PORT", "1")
    with pytest.raises(DatabaseError, match=r"127\.0\.0\.1:1"):
        api.connect()
    with pytest.raises(DatabaseError, match=r"127\.0\.0\.1:2"):
        api.connect(bolt_port=2)
    with pytest.raises(DatabaseError, match=r"127\.0\.0\.1:1"):
        api.pagerank(["a"])


def test_home_names_the_password_file(clean_env, monkeypatch, tmp_path):
    """HSG_HOME (or --home / home=) is where every command finds the local password."""
    other = tmp_path / "other-home"
    password_path(other).parent.mkdir(parents=True)
    password_path(other).write_text("from-other-home\n")
    assert ConnectionSettings.from_env().password is None
    assert ConnectionSettings.from_env(home=other).password == "from-other-home"
    monkeypatch.setenv("HSG_HOME", str(other))
    assert ConnectionSettings.from_env().password == "from-other-home"


# ------------------------------------------ a database that stays small (issue #17, part 4)


def _conf_lines(cfg: server.ServerConfig) -> dict[str, str]:
    text = server.write_conf(cfg).read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_transaction_logs_are_kept_by_size(clean_env, monkeypatch, tmp_path):
    conf = _conf_lines(server.ServerConfig.from_env(home=tmp_path / "a"))
    assert conf["db.tx_log.rotation.retention_policy"] == "256M size"
    assert conf["db.tx_log.rotation.size"] == "64M"
    assert conf["db.checkpoint.interval.time"] == "5m"
    monkeypatch.setenv("HSG_TX_LOG_RETENTION", "1g")
    conf = _conf_lines(server.ServerConfig.from_env(home=tmp_path / "b"))
    assert conf["db.tx_log.rotation.retention_policy"] == "1G size"
    # the option beats the environment
    cfg = server.ServerConfig.from_env(home=tmp_path / "c", tx_log_retention="100m")
    assert _conf_lines(cfg)["db.tx_log.rotation.retention_policy"] == "100M size"


@pytest.mark.parametrize("value", ["2 days", "-1g", "lots", "0"])
def test_bad_retention_is_refused_by_name(clean_env, monkeypatch, tmp_path, value):
    with pytest.raises(DatabaseError, match="transaction log retention"):
        server.ServerConfig.from_env(home=tmp_path, tx_log_retention=value)
    result = CliRunner().invoke(
        cli, ["db", "start", "--home", str(tmp_path), "--tx-log-retention", value]
    )
    assert result.exit_code == 1 and repr(value) in result.output, result.output
    assert not (tmp_path / "conf").exists()


def test_disk_usage_counts_store_and_logs(tmp_path):
    home = tmp_path / "home"
    (home / "data" / "databases" / "neo4j").mkdir(parents=True)
    (home / "data" / "databases" / "neo4j" / "neostore").write_bytes(b"x" * 1000)
    (home / "data" / "transactions" / "neo4j").mkdir(parents=True)
    (home / "data" / "transactions" / "neo4j" / "neostore.transaction.db.0").write_bytes(b"y" * 300)
    (home / "logs").mkdir()
    (home / "logs" / "neo4j.log").write_bytes(b"z" * 20)
    usage = server.disk_usage(server.ServerConfig(home=home))
    assert usage["store_bytes"] == 1000 and usage["tx_log_bytes"] == 300
    assert usage["server_log_bytes"] == 20 and usage["home_bytes"] == 1320
    assert usage["databases"] == {"neo4j": {"store_bytes": 1000, "tx_log_bytes": 300}}
    empty = server.disk_usage(server.ServerConfig(home=tmp_path / "none"))
    assert empty["store_bytes"] == empty["tx_log_bytes"] == empty["home_bytes"] == 0
