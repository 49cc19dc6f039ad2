"""Issue #12 on real servers: secrets, permissions, pid files, passwords, databases, runs.

Stopping, copying and restarting happen on a throwaway server in its own home and on its own
ports (`own_server`), so the shared test server is never disturbed; the tests that only read
or write nodes use the shared one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from hsg.cli import cli
from hsg.db import server
from hsg.db.connection import open_driver, open_gds
from hsg.db.cypher import load_query
from hsg.db.errors import DatabaseError
from hsg.db.settings import password_path, read_password_file

pytestmark = pytest.mark.db


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
def own_server(tmp_path_factory):
    """A throwaway server, installed and started from scratch while every command line that
    hsg runs is recorded: (config, recorded argv lists)."""
    bolt, http = _free_ports(2)
    home = tmp_path_factory.mktemp("hardening") / "neo4j"
    cfg = server.ServerConfig.from_env(
        home=home, bolt_port=bolt, http_port=http, heap="512m", pagecache="64m"
    )
    calls: list[list[str]] = []

    class Popen(subprocess.Popen):  # subprocess.run starts its processes through it too
        def __init__(self, args, *a, **kw):
            calls.append([str(arg) for arg in args])
            super().__init__(args, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("NEO4J_PASSWORD", raising=False)  # a generated password, as for most users
        mp.setattr(subprocess, "Popen", Popen)
        server.start(cfg, log=lambda _msg: None)
    yield cfg, calls
    server.stop(cfg)


def password_accepted(uri: str, user: str, password: str) -> bool:
    from hsg.db.connection import password_accepted

    return password_accepted(uri, user, password)


def _cmdlines() -> dict[int, str]:
    lines = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            lines[int(proc.name)] = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            pass
    return lines


# ------------------------------------------------------------------------------ item 5


def test_initial_password_never_on_a_command_line(own_server):
    cfg, calls = own_server
    password = read_password_file(cfg.home)
    assert password
    admin = [argv for argv in calls if server.ADMIN_TOOL in argv]
    launched = [argv for argv in calls if server.ENTRY_POINT in argv]
    assert len(admin) == 1 and len(launched) == 1  # the spy saw both
    assert not [argv for argv in calls if any(password in arg for arg in argv)]
    assert not [pid for pid, line in _cmdlines().items() if password in line]
    assert not list((cfg.home / "conf").glob(".initial-password-*"))  # the @file is gone
    with open_driver(_own_settings(cfg)):  # and the server took the password from the file
        pass


# ------------------------------------------------------------------------------ item 6


def test_home_is_private_on_a_started_server(own_server):
    cfg, _ = own_server
    with open_driver(_own_settings(cfg)) as driver:  # something in the store and its logs
        driver.execute_query("CREATE (:HardeningProbe {at: datetime()})")
    checked, exposed = 0, []
    for path in [cfg.home, *cfg.home.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            continue
        checked += 1
        if mode & 0o077:
            exposed.append(f"{stat.filemode(mode)} {path.relative_to(cfg.home)}")
    assert exposed == []
    assert checked > 300  # jars, store files, transaction logs, conf, logs
    for part in ("data/databases/neo4j", "data/transactions/neo4j", "conf/hsg-password"):
        assert (cfg.home / part).exists(), part
    status = Path(f"/proc/{server.running_pid(cfg)}/status").read_text()
    assert "Umask:\t0077" in status  # what the server creates later is private too


def _own_settings(cfg):
    from hsg.db.settings import ConnectionSettings

    return ConnectionSettings(cfg.bolt_uri, "neo4j", read_password_file(cfg.home))


# ------------------------------------------------------------------------------ item 7


def test_copied_home_does_not_stop_the_original(own_server, tmp_path):
    cfg, _ = own_server
    pid = server.running_pid(cfg)
    assert pid is not None
    copy = tmp_path / "copy"
    # everything but the jars and the live store: the pid file, conf, logs come along
    shutil.copytree(
        cfg.home,
        copy,
        ignore=lambda d, names: {"lib", "plugins", "data"} if Path(d) == cfg.home else set(),
    )
    assert (copy / "run" / "neo4j.pid").read_text().strip() == str(pid)
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "stop", "--home", str(copy)])
    assert result.exit_code == 0, result.output
    assert "was not running" in result.output and "not the Neo4j server" in result.output
    result = runner.invoke(cli, ["db", "status", "--home", str(copy), "--json"])
    assert json.loads(result.stdout)["pid"] is None
    assert server.running_pid(cfg) == pid  # the original keeps running …
    assert password_accepted(cfg.bolt_uri, "neo4j", read_password_file(cfg.home))  # … and answers


# ------------------------------------------------------------------------------ item 8


def test_lost_password_file_and_wrong_neo4j_password(own_server, monkeypatch):
    """Runs last of the own_server tests: it restarts that server twice."""
    cfg, _ = own_server
    path = password_path(cfg.home)
    right = read_password_file(cfg.home)
    assert server.stop(cfg)
    path.unlink()
    monkeypatch.setenv("NEO4J_PASSWORD", "not-the-password")
    with pytest.raises(DatabaseError, match="NEO4J_PASSWORD is not the password") as err:
        server.start(cfg, log=lambda _msg: None)
    assert "refused" in str(err.value)
    assert not path.exists()  # nothing written
    assert server.running_pid(cfg) is None  # and nothing left running
    monkeypatch.setenv("NEO4J_PASSWORD", right)
    server.start(cfg, log=lambda _msg: None)
    assert read_password_file(cfg.home) == right
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ----------------------------------------------------------------------------- item 11


def test_missing_database_is_named_with_those_that_exist(settings):
    nope = replace(settings, database="no_such_db")
    for opener in (open_driver, open_gds):
        with pytest.raises(DatabaseError) as err:
            opener(nope)
        message = str(err.value)
        assert "'no_such_db' does not exist" in message and "'neo4j'" in message
        assert "Graph Data Science" not in message


def test_missing_database_from_the_cli(tmp_path):
    data = tmp_path / "in.tsv"
    data.write_text("id\tsequence\tlabel\nx\tACGT\ta\n")
    (tmp_path / "sae").mkdir()  # the connection is opened before the SAE is read
    runner = CliRunner()
    for args in (
        ["db", "status"],
        ["analyze", "pagerank", "--label", "a"],
        ["targets", "--up", "a", "--down", "b"],
        ["ingest", str(data), "--model", str(tmp_path / "m"), "--sae", str(tmp_path / "sae")],
    ):
        result = runner.invoke(cli, [*args, "--database", "no_such_db"])
        assert result.exit_code == 1, (args, result.output)
        assert isinstance(result.exception, SystemExit), (args, result.exception)
        assert "'no_such_db' does not exist" in result.output, (args, result.output)
        assert "Traceback" not in result.output and "Graph Data Science" not in result.output


# ----------------------------------------------------------------------------- item 13


def test_status_bolt_port_beats_neo4j_uri(settings, monkeypatch):
    port = server.ServerConfig.from_env().bolt_port  # the shared test server's
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    result = CliRunner().invoke(cli, ["db", "status", "--json", "--bolt-port", str(port)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["uri"] == f"bolt://127.0.0.1:{port}"


# ----------------------------------------------------------------------------- item 15


def test_running_ingest_runs(clean_db, settings):
    from hsg.db.runs import running_ingest_runs

    host = socket.gethostname()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    clean_db.execute_query(
        "UNWIND $runs AS run CREATE (r:IngestRun) SET r = run",
        runs=[
            {"id": "alive", "status": "running", "started": "2025-02-01", "input": "a.tsv"}
            | {"host": host, "pid": os.getpid()},
            {"id": "dead", "status": "running", "started": "2025-03-01", "input": "b.tsv"}
            | {"host": host, "pid": gone.pid},
            {"id": "elsewhere", "status": "running", "started": "2025-01-15", "input": "c.tsv"}
            | {"host": "another-host", "pid": 1},
            {"id": "unmarked", "status": "running", "started": "2025-01-01", "input": "d.tsv"},
            {"id": "done", "status": "finished", "started": "2024-01-01", "input": "e.tsv"},
            {"id": "failed", "status": "failed", "started": "2024-01-02", "input": "f.tsv"},
        ],
    )
    query = load_query("running_ingest_runs")
    assert query.params == ()
    rows = [r.data() for r in clean_db.execute_query(query.text, database_=settings.database)[0]]
    assert [(r["id"], r["input"]) for r in rows] == [
        ("unmarked", "d.tsv"),
        ("elsewhere", "c.tsv"),
        ("alive", "a.tsv"),
        ("dead", "b.tsv"),
    ]
    runs = running_ingest_runs(clean_db, settings.database)
    assert {r["id"]: r["state"] for r in runs} == {
        "unmarked": "unknown",
        "elsewhere": "unknown",
        "alive": "running",
        "dead": "stale",
    }
    runner = CliRunner()
    result = runner.invoke(cli, ["db", "status"])
    assert result.exit_code == 0, result.output
    assert "4 run(s) marked running, 1 stale" in result.output
    [dead_line] = [line for line in result.output.splitlines() if line.strip().startswith("dead")]
    assert "started 2025-03-01" in dead_line and "b.tsv" in dead_line and "stale" in dead_line
    listed = json.loads(runner.invoke(cli, ["db", "status", "--json"]).stdout)
    assert [r["id"] for r in listed["running_ingest_runs"]] == [r["id"] for r in rows]
