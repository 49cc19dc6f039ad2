"""The service's parts that need no model or database: config, token, job queue, options."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from hsg.config import ConfigError
from hsg.service.auth import TOKEN_ENV, check_bearer, load_or_create_token, service_id
from hsg.service.config import PairConfig, ServiceConfig
from hsg.service.jobs import CANCELLED, FINISHED, QUEUED, RUNNING, Job, JobOptions, JobQueue


def test_config_round_trips_and_names_pairs(tmp_path):
    cfg = ServiceConfig(
        pairs=[PairConfig(name="L6", model="m", sae="s")],
        references={"hg38": "/x/hg38.fa"},
        port=9000,
        neo4j={"uri": "bolt://h:7687"},
    )
    path = tmp_path / "service.json"
    path.write_text(cfg.to_json())
    back = ServiceConfig.load(path)
    assert back == cfg
    assert back.pair(None).name == "L6" and back.pair("L6").sae == "s"
    with pytest.raises(KeyError, match="unknown SAE 'L9'.*serves L6"):
        back.pair("L9")
    assert back.reference("hg38") == "/x/hg38.fa"
    assert back.reference("/elsewhere/hg38.fa") == "/x/hg38.fa"  # by file name
    with pytest.raises(KeyError, match="unknown reference"):
        back.reference("mm10")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prot": 1}, "unknown key"),
        ({"port": 0}, "port"),
        ({"pairs": [{"name": "a", "model": "m"}]}, "missing key"),
        ({"pairs": [{"name": "a", "model": "m", "sae": "s"}] * 2}, "unique"),
        ({"neo4j": {"url": "x"}}, "unknown neo4j key"),
        ({"max_encode_sequences": 0}, "positive"),
    ],
)
def test_bad_configs_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        ServiceConfig.from_dict(data)


def test_token_file_is_private_and_stable(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token = load_or_create_token(tmp_path / "state")
    path = tmp_path / "state" / "token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(token) >= 32
    assert load_or_create_token(tmp_path / "state") == token
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert load_or_create_token(tmp_path / "state") == "from-env"
    assert service_id(tmp_path / "state") == service_id(tmp_path / "state")


def test_bearer_check():
    assert check_bearer("Bearer abc", "abc")
    assert check_bearer("bearer abc", "abc")
    assert not check_bearer("Bearer abd", "abc")
    assert not check_bearer("abc", "abc")
    assert not check_bearer(None, "abc")
    assert not check_bearer("Basic abc", "abc")


def test_job_options_checks_like_the_cli():
    JobOptions(input="x").check()
    for bad in ({"top_k": 0}, {"batch_size": 0}, {"stride": 5}, {"fmt": "csv"}):
        with pytest.raises(ValueError):
            JobOptions(input="x", **bad).check()
    opts = JobOptions.from_json(JobOptions(input="a.tsv", label="x", annotations=["b"]).to_json())
    assert opts.label == "x" and opts.annotations == ["b"]


def _job(i: int) -> Job:
    return Job(id=f"j{i}", options=JobOptions(input="x"), submitted=str(i))


def test_queue_runs_one_job_at_a_time_in_order():
    order, running = [], []
    gate = threading.Event()

    def run(job: Job) -> None:
        running.append(job.id)
        assert len(running) == 1  # never two at once
        gate.wait(5)
        order.append(job.id)
        running.remove(job.id)
        job.status = FINISHED

    q = JobQueue(run)
    q.start()
    jobs = [_job(i) for i in range(3)]
    for job in jobs:
        q.add(job)
    _until(lambda: jobs[0].status == RUNNING)
    assert [j.status for j in jobs[1:]] == [QUEUED, QUEUED]
    assert q.depth() == 2
    gate.set()
    _until(lambda: all(j.status == FINISHED for j in jobs))
    assert order == ["j0", "j1", "j2"]
    q.stop(timeout=5)


def test_cancel_a_queued_job_skips_it_and_a_running_one_is_asked():
    gate = threading.Event()
    cancelled = []

    def run(job: Job) -> None:
        gate.wait(5)
        job.status = CANCELLED if job.cancel.is_set() else FINISHED

    q = JobQueue(run, on_cancel=cancelled.append)
    q.start()
    a, b = _job(1), _job(2)
    q.add(a)
    q.add(b)
    _until(lambda: a.status == RUNNING)
    q.cancel("j2")
    assert b.status == CANCELLED and cancelled == [b]
    q.cancel("j1")
    assert a.status == RUNNING and a.to_dict()["cancel_requested"]
    gate.set()
    _until(lambda: a.status == CANCELLED)
    q.stop(timeout=5)
    assert q.cancel("nope") is None


def test_a_job_that_raises_is_failed_and_the_worker_goes_on():
    def run(job: Job) -> None:
        if job.id == "j0":
            raise RuntimeError("boom")
        job.status = FINISHED

    q = JobQueue(run)
    q.start()
    a, b = _job(0), _job(1)
    q.add(a)
    q.add(b)
    _until(lambda: b.status == FINISHED)
    assert a.status == "failed" and "boom" in a.error
    q.stop(timeout=5)


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_stop_starts_no_further_job():
    gate = threading.Event()

    def run(job: Job) -> None:
        gate.wait(5)
        job.status = FINISHED

    q = JobQueue(run)
    q.start()
    a, b = _job(1), _job(2)
    q.add(a)
    q.add(b)
    _until(lambda: a.status == RUNNING)
    stopper = threading.Thread(target=q.stop, kwargs={"timeout": 5})
    stopper.start()
    gate.set()
    stopper.join()
    assert a.status == FINISHED and b.status == QUEUED  # b waits for the next start
