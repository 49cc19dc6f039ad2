"""The crash matrix: kill the ingest, kill the server, stop the server gracefully — each
mid-ingest — then run the same command again; the graph must equal one clean run's.

The test server is the one scripts/test.sh started (HSG_HOME); the server cases kill or stop
it and start it again, so these tests leave it running as they found it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from graph_helpers import fingerprint, tiny_pair

from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

pytestmark = [pytest.mark.db, pytest.mark.slow]

N = 600


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    pair = tiny_pair(tmp_path_factory.mktemp("crash"), seed=4, d_sae=32)
    pair["data"] = write_tsv(make_synthetic_dataset(n=N, seed=9), pair["root"] / "data.tsv")
    return pair


def command(assets) -> list[str]:
    return [sys.executable, "-m", "hsg", "ingest", str(assets["data"]), "--model",
            str(assets["model"]), "--sae", str(assets["sae"]), "--device", "cpu",
            "--batch-size", "16", "--write-batch", "16"]  # fmt: skip


@pytest.fixture(scope="module")
def clean_run(assets, driver, settings):
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    subprocess.run(command(assets), check=True, capture_output=True)
    print_ = fingerprint(driver)
    wipe(driver, settings.database)
    return print_


def encoded(driver) -> int:
    return driver.execute_query("MATCH ()-[e:ENCODED_BY]->() RETURN count(e) AS c").records[0]["c"]


@pytest.mark.parametrize("crash", ["kill-ingest", "kill-server", "stop-server"])
def test_resume_after_a_crash_equals_a_clean_run(crash, assets, clean_run, clean_db, settings):
    from hsg.db import server

    proc = subprocess.Popen(command(assets), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and encoded(clean_db) < 60:
        time.sleep(0.2)
    assert proc.poll() is None, "ingest ended before the crash: " + proc.stderr.read()[-2000:]
    cfg = server.ServerConfig.from_env()
    if crash == "kill-ingest":
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    else:
        pid = server.running_pid(cfg)
        assert pid is not None
        if crash == "kill-server":
            os.kill(pid, signal.SIGKILL)
            while server.running_pid(cfg) is not None:
                time.sleep(0.2)
        else:
            server.stop(cfg, log=lambda _m: None)
        assert proc.wait(timeout=300) != 0  # the ingest fails clearly, it does not hang
        server.start(cfg, log=lambda _m: None)
    partial = encoded(clean_db)
    assert 0 < partial < N
    # run again: it resumes where the crash left it
    again = subprocess.run(command(assets), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert fingerprint(clean_db) == clean_run
