"""The encoder's thread policy: leave cores to a local server, never below one thread, and
give torch's setting back after the run."""

from __future__ import annotations

import torch

from hsg.ingest.threads import encoder_threads, is_local_host, set_torch_threads


def test_a_local_server_keeps_two_cores_and_the_encoder_at_least_one():
    assert [encoder_threads(c, server_local=True) for c in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 14]
    assert [encoder_threads(c, server_local=False) for c in (1, 2, 16)] == [1, 2, 16]


def test_loopback_names_are_local_and_unresolvable_ones_are_not():
    assert is_local_host("127.0.0.1") and is_local_host("localhost")
    assert not is_local_host("no-such-host.invalid")


def test_threads_are_restored():
    before = torch.get_num_threads()
    restore = set_torch_threads(1)
    assert torch.get_num_threads() == 1
    restore()
    assert torch.get_num_threads() == before
    set_torch_threads(None)()  # None changes nothing
    assert torch.get_num_threads() == before
