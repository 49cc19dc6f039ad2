"""A small genome and BED file for the Ray engine's tests (test_ray_plan, test_ray_engine)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hsg import api
from hsg.regions.records import InputError


def genome(path: Path, bad: dict[str, list[int]] | None = None, chr1: int = 1500) -> Path:
    """chr1 (1500 bp) and chr2 (900 bp), soft-masked stretches and Ns; `bad` puts an IUPAC
    R at the given 0-based positions."""
    rng = random.Random(7)
    lines = []
    for chrom, n in (("chr1", chr1), ("chr2", 900)):
        seq = [rng.choice("ACGT") for _ in range(n)]
        seq[100:140] = [b.lower() for b in seq[100:140]]
        seq[300:310] = "N" * 10
        for pos in (bad or {}).get(chrom, []):
            seq[pos] = "R"
        text = "".join(seq)
        lines += [f">{chrom} test"] + [text[i : i + 60] for i in range(0, n, 60)]
    path.write_text("\n".join(lines) + "\n")
    return path


BED = """\
track name=test
chr1\t0\t250\tr1\t0\t+\tbind
chr1\t90\t430\tr2\t0\t-\tbind,other
chr2\t10\t95\tr3\t0\t.\tother
chr1\t1000\t1500\tr4\t0\t-\tbind
chr2\t200\t900\tr5\t0\t+\tother
chr1\t90\t430\tr2again\t0\t-\tthird
"""


def bed_file(tmp_path: Path, text: str = BED, name: str = "regions.bed") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def reader_error(bed, ref, **opts) -> str:
    with pytest.raises(InputError) as caught:
        api.read_regions(bed, reference=ref, **opts)
    return str(caught.value)
