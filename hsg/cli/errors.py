"""How every command turns the library's errors and progress into a terminal's.

The library raises typed errors (all `ValueError`, `FileNotFoundError` or `DatabaseError`
subclasses, each naming the file, line or option at fault) and reports progress through
callbacks; here they become one line on stderr with a non-zero exit status, and tqdm bars.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click


@contextmanager
def user_errors(prefix_input: bool = True) -> Iterator[None]:
    """One-line `click.ClickException`s for every error a user can cause."""
    from hsg.analysis import AnalysisError
    from hsg.db.errors import DatabaseError
    from hsg.fileio import OutputError
    from hsg.regions.records import InputError

    try:
        yield
    except click.ClickException:
        raise
    except InputError as exc:
        raise click.ClickException(f"bad input: {exc}" if prefix_input else str(exc)) from exc
    except (ValueError, FileNotFoundError, OutputError, DatabaseError, AnalysisError) as exc:
        raise click.ClickException(str(exc)) from exc


class Bars:
    """A `progress(stage, n, total)` callback drawing one tqdm bar per stage on stderr."""

    def __init__(self, disable: bool = False, unit: str = "seq") -> None:
        self.disable = disable
        self.unit = unit
        self._bars: dict[str, Any] = {}

    def __call__(self, stage: str, n: int, total: int | None) -> None:
        if self.disable:
            return
        bar = self._bars.get(stage)
        if bar is None:
            from tqdm import tqdm

            for other in self._bars.values():
                other.close()
            bar = self._bars[stage] = tqdm(
                total=total, desc=stage, unit=self.unit, leave=False, dynamic_ncols=True
            )
        bar.update(n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
