"""Shared fixtures.

Tests marked `db` run against the real local Neo4j + GDS server. `scripts/test.sh` (and so
CI) starts a dedicated test server and sets HSG_TEST_DB=1; only then may tests wipe the
database. Without it, `db` tests are skipped so that a developer's own graph is never
touched by accident.
"""

from __future__ import annotations

import os

import pytest

from hsg.db.settings import ConnectionSettings


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HSG_TEST_DB") == "1":
        return
    skip = pytest.mark.skip(
        reason="db test: run through scripts/test.sh, which starts a dedicated test server "
        "and sets HSG_TEST_DB=1"
    )
    for item in items:
        if "db" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def settings() -> ConnectionSettings:
    return ConnectionSettings.from_env()


@pytest.fixture(scope="session")
def driver(settings):
    from hsg.db.connection import open_driver

    drv = open_driver(settings)
    yield drv
    drv.close()


@pytest.fixture
def clean_db(driver, settings):
    """An empty database with the schema applied; GDS graphs dropped."""
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    yield driver
    wipe(driver, settings.database)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs, as in CI, for the tests of one module (no dashboard)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
