"""Activation shards, the sequence-level split, shuffling, metrics and the training loop."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from hsg.sae.activations import (
    ArrayStore,
    EmbedFileStore,
    ShardCacheStore,
    ShardWriter,
    cache_activations,
    count_rows,
    iter_batches,
    open_activations,
    reusable_cache,
    split_ids,
)
from hsg.sae.config import SAEConfig, TrainConfig
from hsg.sae.metrics import MetricsAccumulator
from hsg.sae.model import WEIGHTS_FILE, SparseAutoencoder
from hsg.sae.train import METRICS_FILE, TrainError, evaluate, l1_schedule, train_sae

D = 6


def _sequences(n_seq=40, seed=0):
    """Per-sequence activation blocks of varying length; row values encode (seq, pos)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_seq):
        t = int(rng.integers(1, 9))
        rows = rng.standard_normal((t, D)).astype(np.float32)
        rows[:, 0] = s  # so a row's sequence can be read back from its values
        rows[:, 1] = np.arange(t)
        out.append((f"chr1:{s * 100}-{s * 100 + 50}(+)", rows))
    return out


def _write_cache(path, seqs, shard_size=16):
    w = ShardWriter(path, shard_size=shard_size, d_in=D)
    for sid, rows in seqs:
        w.add(sid, rows)
    return w.close(model_id="m", layer=1)


# ---------------------------------------------------------------- the cache
def test_shard_cache_round_trip(tmp_path):
    seqs = _sequences()
    m = _write_cache(tmp_path, seqs, shard_size=16)
    total = sum(len(r) for _, r in seqs)
    assert m.n_tokens == total and m.n_sequences == len(seqs)
    assert all(s["n_tokens"] <= 16 for s in m.shards) and len(m.shards) == -(-total // 16)
    store = open_activations(tmp_path)
    assert isinstance(store, ShardCacheStore) and store.d_in == D
    assert store.provenance()["model_id"] == "m" and store.provenance()["layer"] == 1
    got = [store.load_shard(i) for i in range(store.num_shards)]
    x = np.concatenate([g.x for g in got])
    seq = np.concatenate([g.seq for g in got])
    assert np.array_equal(x, np.concatenate([r for _, r in seqs]))
    assert np.array_equal(seq, x[:, 0].astype(np.int64))  # row -> its sequence
    assert list(store.sequence_ids()) == [sid for sid, _ in seqs]
    # rewriting clears the old shards, leaves foreign files alone
    (tmp_path / "notes.txt").write_text("mine")
    _write_cache(tmp_path, seqs[:3], shard_size=1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "notes.txt",
        "shard-00000.safetensors",
    ]


def test_cache_activations_with_a_fake_encoder(tmp_path):
    """The encoder runs once per batch; <cls> and padding never reach the cache."""
    calls = []

    class FakeEncoder:
        model_id, version, hidden_size, checkpoint_hash = "fake", "v2", D, "c0ffee"

        def embed(self, seqs, layer, names=None):
            calls.append(list(names))
            t = max(len(s) for s in seqs) + 1
            hidden = torch.full((len(seqs), t, D), -1.0)
            content = torch.zeros(len(seqs), t, dtype=torch.bool)
            for b, s in enumerate(seqs):
                content[b, 1 : 1 + len(s)] = True
                hidden[b, 1 : 1 + len(s)] = float(len(s))
            attention = content.clone()
            attention[:, 0] = True
            return SimpleNamespace(hidden=hidden, content_mask=content, attention_mask=attention)

    recs = [SimpleNamespace(id=f"s{i}", sequence="A" * (i + 1)) for i in range(5)]
    m = cache_activations(recs, FakeEncoder(), 3, tmp_path, shard_size=4, batch_size=2)
    assert calls == [["s0", "s1"], ["s2", "s3"], ["s4"]]
    assert m.n_tokens == 15 and m.sequence_tokens == [1, 2, 3, 4, 5]
    assert (m.model_id, m.layer, m.checkpoint_hash, m.model_version) == ("fake", 3, "c0ffee", "v2")
    store = ShardCacheStore(tmp_path)
    x = np.concatenate([store.load_shard(i).x for i in range(store.num_shards)])
    assert (x >= 1).all()  # no <cls> (-1) and no padding rows
    found = reusable_cache(
        tmp_path, data_fingerprint=m.data_fingerprint, model_id="fake",
        checkpoint_hash="c0ffee", layer=3,
    )  # fmt: skip
    assert found is not None
    other = reusable_cache(
        tmp_path, data_fingerprint=m.data_fingerprint, model_id="fake",
        checkpoint_hash="c0ffee", layer=4,
    )  # fmt: skip
    assert other is None


def test_flat_and_embed_files(tmp_path):
    x = np.random.default_rng(1).standard_normal((50, D)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    save_file({"activations": x}, str(tmp_path / "a.safetensors"))
    for name in ("a.npy", "a.safetensors"):
        store = open_activations(tmp_path / name, shard_size=16)
        assert store.num_shards == 4 and store.n_sequences == 50
        got = np.concatenate([store.load_shard(i).x for i in range(store.num_shards)])
        assert np.array_equal(got, x)
    # `hsg models embed` layout: hidden [B,T,d] + content_mask, ids in metadata
    hidden = np.arange(3 * 4 * D, dtype=np.float32).reshape(3, 4, D)
    mask = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1]], dtype=bool)
    meta = {"ids": json.dumps(["a", "b", "c"]), "model_id": "m", "layer": "2"}
    save_file({"hidden": hidden, "content_mask": mask}, str(tmp_path / "e.safetensors"), meta)
    store = open_activations(tmp_path / "e.safetensors", shard_size=3)
    assert isinstance(store, EmbedFileStore)
    assert store.n_tokens == 6 and list(store.sequence_ids()) == ["a", "b", "c"]
    assert store.provenance() == {"model_id": "m", "layer": 2}
    shards = [store.load_shard(i) for i in range(store.num_shards)]
    assert np.array_equal(np.concatenate([s.x for s in shards]), hidden[mask])
    assert np.concatenate([s.seq for s in shards]).tolist() == [0, 0, 1, 2, 2, 2]


def test_split_is_by_sequence_and_seeded():
    ids = [f"seq{i}" for i in range(2000)]
    a = split_ids(ids, 0.2, seed=0)
    assert np.array_equal(a, split_ids(ids, 0.2, seed=0))
    assert 0.15 < a.mean() < 0.25
    assert not np.array_equal(a, split_ids(ids, 0.2, seed=1))
    # a sequence's side does not depend on which other sequences are present
    assert np.array_equal(split_ids(ids[::7], 0.2, seed=0), a[::7])


def test_iter_batches_shuffles_across_sequences_and_keeps_every_row(tmp_path):
    seqs = _sequences(60)
    _write_cache(tmp_path, seqs, shard_size=16)
    store = ShardCacheStore(tmp_path)
    keep = ~store.validation_mask(0.25, seed=0)
    expected = Counter(
        (s, p) for s, (_, rows) in enumerate(seqs) if keep[s] for p in range(len(rows))
    )

    def run(seed):
        rng = np.random.default_rng(seed)
        return list(iter_batches(store, keep, 8, rng=rng, buffer_shards=2))

    batches = run(0)
    rows = np.concatenate(batches)
    assert Counter(map(tuple, rows[:, :2].astype(int).tolist())) == expected
    assert count_rows(store, keep) == len(rows)
    assert all(len(b) == 8 for b in batches[:-1])
    # consecutive rows come from many sequences, not one sequence's run of tokens
    assert len(set(batches[0][:, 0].tolist())) >= 4
    assert all(np.array_equal(a, b) for a, b in zip(batches, run(0), strict=True))
    assert not np.array_equal(np.concatenate(run(1)), rows)
    # the validation sequences never appear in training batches
    assert not set(rows[:, 0].astype(int)) & set(np.flatnonzero(~keep))


# ---------------------------------------------------------------- metrics
def test_metrics_accumulator_matches_direct_computation():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen) + 2.0
    x_hat = x + 0.1 * torch.randn(40, 5, generator=gen)
    z = torch.relu(torch.randn(40, 7, generator=gen))
    z[:, 3] = 0  # latent 3 never fires
    acc = MetricsAccumulator(5, 7)
    for lo in range(0, 40, 16):
        acc.update(x[lo : lo + 16], x_hat[lo : lo + 16], z[lo : lo + 16], loss=1.5)
    r = acc.result()
    x64, xh64 = x.double(), x_hat.double()
    assert r["mse"] == pytest.approx(float(((xh64 - x64) ** 2).mean()))
    fvu = float(((xh64 - x64) ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum())
    assert r["fve"] == pytest.approx(1 - fvu)
    assert r["l0"] == pytest.approx(float((z != 0).sum()) / 40)
    assert r["l1"] == pytest.approx(float(z.sum()) / 40, rel=1e-6)
    assert r["dead_latents"] == 1 and r["loss"] == pytest.approx(1.5)


def test_l1_warmup_is_linear_from_zero():
    cfg = SAEConfig(d_in=4, d_sae=8, l1_coefficient=0.2, l1_warmup_steps=10)
    assert [l1_schedule(cfg, s) for s in (0, 5, 10, 50)] == pytest.approx([0, 0.1, 0.2, 0.2])
    assert l1_schedule(cfg.replace(l1_warmup_steps=0), 0) == 0.2


# ---------------------------------------------------------------- training
def _store(n_seq=120, seed=0):
    """Sparse-ish data with sequence structure: 3 tokens per sequence."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((12, D))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    n = n_seq * 3
    coef = rng.uniform(0.5, 1.5, (n, 12)) * (rng.random((n, 12)) < 0.2)
    x = (coef @ atoms).astype(np.float32)
    seq = np.repeat(np.arange(n_seq), 3)
    return ArrayStore(x, sequence=seq, ids=[f"s{i}" for i in range(n_seq)], shard_size=64)


CFG = SAEConfig(d_in=D, d_sae=24, l1_coefficient=0.01, l1_warmup_steps=5, lr=3e-3, seed=1)
TCFG = TrainConfig(batch_size=32, epochs=4, patience=10, val_fraction=0.2)


def test_training_keeps_the_best_checkpoint_and_logs_metrics(tmp_path):
    store = _store()
    res = train_sae(store, CFG, TCFG, tmp_path / "run")
    out = tmp_path / "run"
    lines = [json.loads(line) for line in (out / METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    for r in lines:
        for split in ("train", "val"):
            assert {"mse", "fve", "l0", "dead_latents"} <= set(r[split])
    assert lines[-1]["val"]["fve"] > lines[0]["val"]["fve"]
    best = min(lines, key=lambda r: r["val_loss"])
    assert res.best_epoch == best["epoch"] and res.best_val_loss == best["val_loss"]
    # what is on disk is the best epoch's SAE, and its validation loss reproduces
    saved = SparseAutoencoder.load(out)
    val = store.validation_mask(TCFG.val_fraction, CFG.seed)
    assert evaluate(saved, store, val)["loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert saved.cfg.weights_sha256 is not None
    # an existing run is never overwritten by accident
    with pytest.raises(TrainError, match="--resume"):
        train_sae(store, CFG, TCFG, out)


class _PoisonedStore(ArrayStore):
    """Once `poison` is set, training rows are negated and shifted off the distribution."""

    poison = False
    val: np.ndarray

    def load_shard(self, i):
        shard = super().load_shard(i)
        if self.poison:
            train = ~self.val[shard.seq]
            shard.x[train] = 5.0 - shard.x[train]
        return shard


def test_best_not_last_when_later_epochs_get_worse(tmp_path):
    base = _store()
    store = _PoisonedStore(base._x, sequence=base._seq, ids=base._ids, shard_size=64)
    store.val = store.validation_mask(TCFG.val_fraction, CFG.seed)

    def log(line: str) -> None:
        if line.startswith("epoch 2 "):
            store.poison = True  # epochs 3+ train on garbage; validation stays clean

    cfg = CFG.replace(lr=2e-2)
    res = train_sae(store, cfg, TCFG.replace(epochs=6, patience=2), tmp_path, log=log)
    store.poison = False
    assert res.best_epoch == 2 and res.stopped_early and len(res.history) == 4
    assert all(r["val_loss"] > res.best_val_loss for r in res.history[2:])
    saved = SparseAutoencoder.load(tmp_path)
    assert evaluate(saved, store, store.val)["loss"] == pytest.approx(res.best_val_loss, rel=1e-5)
    assert saved.sae_id == res.sae.sae_id
    # resuming a run that stopped early trains no further epoch
    again = train_sae(store, cfg, TCFG.replace(epochs=6, patience=2), tmp_path, resume=True)
    assert again.stopped_early and len(again.history) == 4 and again.best_epoch == 2


def test_training_is_deterministic_and_resume_is_exact(tmp_path):
    store = _store()
    full = train_sae(store, CFG, TCFG.replace(epochs=3), tmp_path / "full")
    again = train_sae(store, CFG, TCFG.replace(epochs=3), tmp_path / "again")
    assert (tmp_path / "full" / WEIGHTS_FILE).read_bytes() == (
        tmp_path / "again" / WEIGHTS_FILE
    ).read_bytes()
    assert full.sae.sae_id == again.sae.sae_id

    train_sae(store, CFG, TCFG.replace(epochs=1), tmp_path / "split")
    resumed = train_sae(store, CFG, TCFG.replace(epochs=3), tmp_path / "split", resume=True)
    drop = ("seconds", "tokens_per_s")

    def strip(h):
        return [{k: v for k, v in r.items() if k not in drop} for r in h]

    assert strip(resumed.history) == strip(full.history)
    a = (tmp_path / "full" / "train_state" / "current.safetensors").read_bytes()
    b = (tmp_path / "split" / "train_state" / "current.safetensors").read_bytes()
    assert a == b
    with pytest.raises(TrainError, match="sae.lr"):
        train_sae(store, CFG.replace(lr=1e-2), TCFG, tmp_path / "split", resume=True)


def test_training_errors():
    store = _store(n_seq=3)
    with pytest.raises(TrainError, match="validation split is empty"):
        train_sae(store, CFG, TCFG.replace(val_fraction=0.01))
    with pytest.raises(TrainError, match="width"):
        train_sae(store, CFG.replace(d_in=D + 1), TCFG)
    with pytest.raises(TrainError, match="nothing to resume"):
        train_sae(_store(), CFG, TCFG, None, resume=True)


def test_training_without_out_dir_and_topk():
    store = _store()
    res = train_sae(store, CFG.replace(architecture="topk", k=2), TCFG.replace(epochs=2))
    assert res.out_dir is None and len(res.history) == 2
    assert res.history[-1]["val"]["l0"] <= 2.0
