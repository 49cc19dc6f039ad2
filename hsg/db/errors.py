"""One exception type for everything the database layer wants to tell a user."""

from __future__ import annotations


class DatabaseError(RuntimeError):
    """A database problem with a message that says what to do; the CLI prints it and exits 1."""
