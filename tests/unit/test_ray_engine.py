"""`hsg ingest --engine ray` on BED + reference with a local Ray (`ray.init(num_cpus=2)`): the
Ray tasks look the bases up, and the shards are byte for byte the ones the driver-reads-all
path writes (so a folder made by an earlier hsg resumes); a bad base in the last shard is
refused with the reader's message before anything is written."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from lookup_inputs import BED, bed_file, genome, reader_error  # noqa: E402

from hsg import api  # noqa: E402
from hsg.regions.records import InputError  # noqa: E402
from hsg.shards.reader import ShardSet  # noqa: E402
from hsg.shards.schema import marker_file  # noqa: E402

pytestmark = pytest.mark.slow

OPTIONS = {"label_column": 6, "top_k": 2, "window": 100, "stride": 80, "shard_size": 8}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    import torch

    from hsg.sae.config import SAEConfig
    from hsg.sae.model import SparseAutoencoder

    root = tmp_path_factory.mktemp("pair")
    model = api.make_tiny_model(root / "model", "v2", seed=2)
    encoder = api.load_encoder(model, device="cpu")
    torch.manual_seed(0)
    cfg = SAEConfig(d_in=encoder.hidden_size, d_sae=40, layer=1, model_id=encoder.model_id,
                    encoder_checkpoint_hash=encoder.checkpoint_hash)  # fmt: skip
    SparseAutoencoder(cfg).save(root / "sae")
    return model, root / "sae"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def test_bed_lookups_run_in_the_tasks_and_write_the_same_shards(ray_local, pair, tmp_path,
                                                                monkeypatch):  # fmt: skip
    from hsg.api import _shards
    from hsg.ingest import shard_plan
    from hsg.regions import lookup

    model, sae = pair
    ref, bed = genome(tmp_path / "ref.fa"), bed_file(tmp_path)
    # the old path: the driver reads every record (bases included) and plans them all
    with monkeypatch.context() as m:
        m.setattr(_shards, "_regions", lambda source, fmt, reference, label, label_column,
                  window, stride: api.iter_regions(source, reference=reference,
                                                   label_column=label_column, window=window,
                                                   stride=stride))  # fmt: skip
        whole = api.encode_to_shards(bed, model, sae, tmp_path / "read", reference=ref, **OPTIONS)

    def not_here(*_args, **_kwargs):
        raise AssertionError("the driver looked bases up")

    # a plan folder left by a killed run of this host is cleared by the next run
    stale = tmp_path / "lookup" / f".plan-{socket.gethostname().replace('-', '_')}-999999999-x"
    stale.mkdir(parents=True)
    with monkeypatch.context() as m:  # the driver's modules only: tasks import their own
        m.setattr(lookup, "lookup_record", not_here)
        m.setattr(shard_plan, "lookup_record", not_here)
        looked = api.encode_to_shards(bed, model, sae, tmp_path / "lookup", reference=ref,
                                      **OPTIONS)  # fmt: skip
    assert whole.sequences == looked.sequences > 6 and looked.shards_written == looked.shards
    assert looked.duplicates == whole.duplicates > 0  # r2again repeats r2's windows
    assert (
        ShardSet(tmp_path / "read").manifest.fingerprint
        == ShardSet(tmp_path / "lookup").manifest.fingerprint
    )
    assert _files(tmp_path / "lookup") == _files(tmp_path / "read")  # tables and markers
    assert not stale.exists()

    # resumable: a shard lost is the only one written again
    (tmp_path / "lookup" / marker_file(1)).unlink()
    again = api.encode_to_shards(bed, model, sae, tmp_path / "lookup", reference=ref, **OPTIONS)
    assert (again.shards_written, again.shards_skipped) == (1, looked.shards - 1)
    assert _files(tmp_path / "lookup") == _files(tmp_path / "read")


def test_a_bad_base_in_the_last_shard_is_refused_before_any_shard(ray_local, pair, tmp_path):
    model, sae = pair
    ref = genome(tmp_path / "ref.fa", bad={"chr2": [850]})  # in r5, the last region read
    bed = bed_file(tmp_path, BED.rsplit("\n", 2)[0] + "\n")  # without r2again
    message = reader_error(bed, ref, label_column=6, window=100, stride=80)
    assert "line 6: invalid base 'R' at position 651" in message
    out = tmp_path / "shards"
    with pytest.raises(InputError) as caught:
        api.encode_to_shards(bed, model, sae, out, reference=ref, **OPTIONS)
    assert str(caught.value) == message
    assert not out.exists()  # no manifest, no shard, no plan files
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError):
        api.encode_to_shards(bed, model, sae, out, reference=ref, **OPTIONS)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    shutil.rmtree(out)
    assert os.listdir(tmp_path)  # the inputs are still there
