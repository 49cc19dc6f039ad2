"""hsg's drivers keep the server's notifications off the terminal unless asked for them.

A query naming a relationship type the database has never seen is correct Cypher, but the
server answers with an "unknown relationship type" notification that the driver logs as a
multi-line warning. hsg's drivers (plain and GDS) ask for none; `HSG_LOG_LEVEL=DEBUG` (what
`hsg --verbose` sets) brings them back, which also shows these tests can see them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import hsg.db.connection as connection
from hsg.db.connection import driver_session, open_gds

pytestmark = pytest.mark.db

QUERY = "MATCH (:HsgQuietCheck)-[r:HSG_QUIET_NO_SUCH_TYPE]->() RETURN count(r) AS n"
NOTIFICATIONS = "neo4j.notifications"


def _notifications(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(NOTIFICATIONS)]


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=NOTIFICATIONS)
    return caplog


def test_driver_logs_no_notifications(settings, capture, monkeypatch):
    monkeypatch.delenv(connection.LOG_LEVEL_ENV, raising=False)
    with driver_session(settings) as driver:
        assert driver.execute_query(QUERY, database_=settings.database).records[0]["n"] == 0
        with driver.session(database=settings.database) as session:
            session.run(QUERY).consume()
    assert _notifications(capture) == []


def test_gds_client_logs_no_notifications_and_closes_its_driver(settings, capture, monkeypatch):
    monkeypatch.delenv(connection.LOG_LEVEL_ENV, raising=False)
    closed: list[object] = []
    open_driver = connection.open_driver

    def recording_open_driver(*args, **kwargs):
        driver = open_driver(*args, **kwargs)
        close = driver.close

        def recording_close() -> None:
            closed.append(driver)
            close()

        driver.close = recording_close
        return driver

    monkeypatch.setattr(connection, "open_driver", recording_open_driver)
    gds = open_gds(settings)
    try:
        assert int(gds.run_cypher(QUERY)["n"][0]) == 0
    finally:
        gds.close()
    assert _notifications(capture) == []
    assert len(closed) == 1  # the client's driver is closed with it


def test_debug_level_shows_the_notifications(settings, capture, monkeypatch):
    monkeypatch.setenv(connection.LOG_LEVEL_ENV, "DEBUG")
    with driver_session(settings) as driver:
        driver.execute_query(QUERY, database_=settings.database)
    shown = _notifications(capture)
    assert shown, "with HSG_LOG_LEVEL=DEBUG the server's notification should be logged"
    assert any("HSG_QUIET_NO_SUCH_TYPE" in r.getMessage() for r in shown)


# The root group's callback runs before `db --help` prints, as it does before any command.
_CLI_THEN_QUERY = f"""
import sys
from hsg.cli import cli
from hsg.db.connection import driver_session
from hsg.db.settings import ConnectionSettings

try:
    cli.main(args=sys.argv[1:] + ["db", "--help"], prog_name="hsg", standalone_mode=False)
except SystemExit:
    pass
settings = ConnectionSettings.from_env()
with driver_session(settings) as driver:
    driver.execute_query({QUERY!r}, database_=settings.database)
"""


@pytest.mark.parametrize("flags", [[], ["-v"], ["--verbose"]])
def test_cli_verbose_flag_prints_the_notifications(flags):
    env = {k: v for k, v in os.environ.items() if k != connection.LOG_LEVEL_ENV}
    run = subprocess.run(
        [sys.executable, "-c", _CLI_THEN_QUERY, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert ("HSG_QUIET_NO_SUCH_TYPE" in run.stderr) == bool(flags), run.stderr
