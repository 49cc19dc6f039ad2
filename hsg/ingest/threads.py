"""How many threads the CPU encoder gets during an ingest.

torch uses one thread per core by default. During an ingest into a server on the same machine
that starves the server: the database's work (one transaction at a time, plus its page
cache flushes and garbage collection) and the writer thread packing rows need cores too, and
an encoder that takes them all makes both sides wait on each other. Measured on a 2-core
machine (issue #17), the same ingest with one torch thread ran 1.4–1.6× faster than with
two. So with a local server the encoder leaves two cores to it (never going below one
thread); with a remote server the encoder keeps torch's default. A run's explicit
`threads` wins over both.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable

import torch

RESERVED_FOR_LOCAL_SERVER = 2


def available_cores() -> int:
    """Cores this process may run on (affinity and cpusets honoured, unlike cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def encoder_threads(cores: int, server_local: bool) -> int:
    """The encoder's torch threads for `cores` cores and a local or remote server."""
    if not server_local:
        return max(1, cores)
    return max(1, cores - RESERVED_FOR_LOCAL_SERVER)


def is_local_host(host: str) -> bool:
    """Whether `host` names this machine (loopback, or one of this host's own addresses)."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    try:
        own = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        own = set()
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in own for a in addresses)


def server_is_local(driver) -> bool:
    """Whether the server behind `driver` runs on this machine (False when unknown)."""
    try:
        address = driver.get_server_info().address
    except Exception:  # noqa: BLE001 - unknown is treated as remote: torch keeps its default
        return False
    return is_local_host(str(address[0]))


def set_torch_threads(threads: int | None) -> Callable[[], None]:
    """Set torch's intra-op threads (None: unchanged) and return what restores the previous
    value; the setting is process-wide, so a run must give it back."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)

    def restore() -> None:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

    return restore
