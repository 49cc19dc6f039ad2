"""`hsg serve` as users run it: a real uvicorn process on loopback, the real test server.

One service process serves the module (its token from the 0600 file it made); the
restart test kills it with SIGKILL and starts it again on the same state dir. Every graph
is compared with the fingerprint of a direct `hsg.api.ingest` of the same input."""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from graph_helpers import fingerprint, tiny_pair

from hsg import api
from hsg.regions.synthetic import make_synthetic_dataset, write_tsv

pytestmark = [pytest.mark.db, pytest.mark.slow]

N = 360  # long enough (batches of 16) to kill or cancel mid-job


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    pair = tiny_pair(tmp_path_factory.mktemp("service"), seed=4, d_sae=32)
    root = pair["root"]
    pair["a"] = write_tsv(make_synthetic_dataset(n=60, seed=1), root / "a.tsv")
    pair["b"] = write_tsv(make_synthetic_dataset(n=60, seed=2, chrom="synB"), root / "b.tsv")
    pair["fasta"] = root / "ref.fa"
    pair["fasta"].write_text(">chr1\n" + "ACGT" * 100 + "\n")
    pair["big"] = write_tsv(make_synthetic_dataset(n=N, seed=9, chrom="synC"), root / "big.tsv")
    return pair


def _ingest(conn, path, assets) -> api.ingest:
    return api.ingest(path, assets["model"], assets["sae"], connection=conn, device="cpu",
                      batch_size=16, write_batch=16)  # fmt: skip


@pytest.fixture(scope="module")
def direct(assets, driver, settings):
    """Fingerprints of direct ingests: a alone, a then b, big alone; summary of a."""
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    conn = api.Connection(settings, driver)
    out = {}
    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    out["summary_a"] = _ingest(conn, assets["a"], assets)
    out["a"] = fingerprint(driver)
    _ingest(conn, assets["b"], assets)
    out["ab"] = fingerprint(driver)
    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    _ingest(conn, assets["big"], assets)
    out["big"] = fingerprint(driver)
    wipe(driver, settings.database)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`hsg serve` in a subprocess; `start` waits for /health."""

    def __init__(self, assets, state: Path) -> None:
        self.assets, self.state, self.port = assets, state, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "HSG_SERVICE_TOKEN"}
        self.log = open(self.state.parent / f"serve-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hsg", "serve", "--model", str(self.assets["model"]),
             "--sae", str(self.assets["sae"]), "--name", "tiny", "--device", "cpu",
             "--port", str(self.port), "--state-dir", str(self.state), "--max-upload-mb", "0.5",
             "--reference", f"tiny={self.assets['fasta']}"],
            stdout=self.log, stderr=self.log, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.tail()
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("service did not start: " + self.tail())

    def tail(self) -> str:
        self.log.flush()
        return (self.state.parent / f"serve-{self.port}.log").read_text()[-3000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def token(self) -> str:
        return (self.state / "token").read_text().strip()

    def client(self) -> api.ServiceClient:
        return api.ServiceClient(self.url, self.token)


@pytest.fixture(scope="module")
def server(assets, direct, tmp_path_factory):
    srv = Server(assets, tmp_path_factory.mktemp("state") / "service")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def db(server, driver, settings):
    """An empty graph, after any job of an earlier test has ended."""
    from hsg.db.schema import apply_schema
    from hsg.graph.maintenance import wipe

    with server.client() as client:
        for job in client.jobs():
            if job["status"] in ("queued", "running"):
                client.cancel(job["id"])
                _wait(client, job["id"], ("cancelled", "finished", "failed"))
    wipe(driver, settings.database)
    apply_schema(driver, settings.database)
    yield driver
    wipe(driver, settings.database)


def _wait(client, job_id, states, timeout=180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job["status"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {states}: {job}")


def _encoded(driver) -> int:
    return driver.execute_query("MATCH ()-[e:ENCODED_BY]->() RETURN count(e) AS c").records[0]["c"]


def _runs(driver) -> int:
    return driver.execute_query("MATCH (r:IngestRun) RETURN count(r) AS c").records[0]["c"]


def test_token_is_required_everywhere_but_health(server):
    mode = os.stat(server.state / "token").st_mode & 0o777
    assert mode == 0o600
    assert httpx.get(server.url + "/health").json()["neo4j"] is True
    for method, path in [("GET", "/jobs"), ("GET", "/jobs/x"), ("DELETE", "/jobs/x"),
                         ("POST", "/jobs"), ("POST", "/encode"), ("GET", "/metrics")]:  # fmt: skip
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": server.token}):
            r = httpx.request(method, server.url + path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
    with api.ServiceClient(server.url, "wrong") as client, pytest.raises(api.ServiceError) as err:
        client.jobs()
    assert err.value.status == 401 and "HSG_SERVICE_TOKEN" in str(err.value)


def test_cli_submit_equals_a_direct_ingest(server, assets, direct, db):
    env = {**os.environ, "HSG_SERVICE_TOKEN": server.token}
    done = subprocess.run(
        [sys.executable, "-m", "hsg", "ingest", str(assets["a"]), "--server", server.url,
         "--batch-size", "16", "--write-batch", "16"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = direct["summary_a"]
    assert f"wrote {want.sequences_encoded} sequences" in done.stdout
    assert f"activations: {want.activations}" in done.stdout
    assert fingerprint(db) == direct["a"]
    with server.client() as client:
        job = client.jobs()[-1]
        assert job["status"] == "finished" and job["progress"]["done"] == 60
        assert job["counts"]["relationships_created"] == want.relationships_created
        metrics = client.metrics()
    assert 'hsg_jobs{state="finished"}' in metrics and "hsg_queue_depth 0" in metrics
    assert not any((server.state / "uploads").iterdir())  # the upload is gone with the job


def test_two_jobs_at_once_queue_and_equal_two_ingests(server, assets, direct, db):
    with server.client() as client:
        first = client.submit(assets["a"], batch_size=16, write_batch=16)
        second = client.submit(assets["b"], batch_size=16, write_batch=16)
        assert second["status"] == "queued"
        for job in (first, second):
            assert _wait(client, job["id"], ("finished", "failed"))["status"] == "finished"
    assert fingerprint(db) == direct["ab"]


def test_encode_returns_top_features_and_writes_nothing(server, db):
    with server.client() as client:
        out = client.encode(["ACGTACGTAAGGCCTT" * 4, {"id": "x", "sequence": "ACGTTT" * 5}])
        assert [s["id"] for s in out] == ["seq1", "x"]
        assert out[0]["activations"] and {"feature", "position", "token"} <= set(
            out[0]["activations"][0]
        )
        with pytest.raises(api.ServiceError, match="invalid base"):
            client.encode(["ACGTXACGT"])
        with pytest.raises(api.ServiceError, match="at most"):
            client.encode(["ACGT"] * 100)
    assert _runs(db) == 0 and _encoded(db) == 0


def test_bad_uploads_are_refused_and_store_nothing(server, assets, db, tmp_path):
    bad_bed = tmp_path / "bad.bed"
    bad_bed.write_text("chr1\tten\t20\n")
    bad_base = tmp_path / "bad.tsv"
    text = assets["a"].read_text().splitlines()
    row = text[1].split("\t")
    row[5] = row[5][:10] + "X" + row[5][11:]
    bad_base.write_text("\n".join([text[0], "\t".join(row)]) + "\n")
    garbage = tmp_path / "garbage.tsv.gz"
    garbage.write_bytes(gzip.compress(b"id\tsequence\n")[:12] + os.urandom(200))
    big = tmp_path / "big.tsv"
    big.write_bytes(b"x" * (600 * 1024))
    cases = [
        (bad_bed, {"reference": "tiny"}, 400, "bad.bed, line 1: start must be an integer"),
        (bad_bed, {"reference": "hg00"}, 400, "unknown reference 'hg00'"),
        (bad_base, {}, 400, "invalid base 'X'"),
        (garbage, {}, 400, "gzip"),
        (assets["a"], {"sae": "nope"}, 400, "unknown SAE 'nope'"),
        (big, {}, 413, "larger than"),
        (assets["a"], {"top_k": 0}, 400, "at least 1"),
    ]
    with server.client() as client:
        for path, options, status, message in cases:
            with pytest.raises(api.ServiceError) as err:
                client.submit(path, **options)
            assert err.value.status == status, (path, str(err.value))
            assert message in str(err.value), (path, str(err.value))
    assert _runs(db) == 0 and _encoded(db) == 0
    assert not any((server.state / "uploads").iterdir())


def test_cancel_mid_job_leaves_a_consistent_graph(server, assets, db):
    with server.client() as client:
        job = client.submit(assets["big"], batch_size=16, write_batch=16)
        deadline = time.monotonic() + 120
        while _encoded(db) < 48 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.cancel(job["id"])
        end = _wait(client, job["id"], ("cancelled", "finished", "failed"))
    assert end["status"] == "cancelled", end
    assert 0 < _encoded(db) < N
    status = db.execute_query("MATCH (r:IngestRun {id: $id}) RETURN r.status AS s", id=job["id"])
    assert status.records[0]["s"] == "cancelled"
    from hsg.graph.consistency import check_graph

    assert [f.name for f in check_graph(db, "neo4j") if not f.ok] == []


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_a_stopped_service_resumes_its_job_to_a_clean_graph(stop, server, assets, direct, db):
    with server.client() as client:
        job = client.submit(assets["big"], batch_size=16, write_batch=16)
    deadline = time.monotonic() + 120
    while _encoded(db) < 48 and time.monotonic() < deadline:
        time.sleep(0.05)
    if stop == "SIGKILL":
        server.kill()
    else:  # a graceful stop ends the job at a batch boundary, marked to resume
        server.stop()
        status = db.execute_query(
            "MATCH (r:IngestRun {id: $id}) RETURN r.status AS s", id=job["id"]
        )
        assert status.records[0]["s"] == "interrupted"
    partial = _encoded(db)
    assert 0 < partial < N
    assert any((server.state / "uploads").iterdir())  # kept until the job ends
    server.start()
    with server.client() as client:
        end = _wait(client, job["id"], ("finished", "failed", "cancelled"))
        assert end["status"] == "finished", end
        assert any(j["id"] == job["id"] for j in client.jobs())
    assert fingerprint(db) == direct["big"]
