"""One exception type for everything the database layer wants to tell a user."""

from __future__ import annotations


class DatabaseError(RuntimeError):
    """A database problem with a message that says what to do; the CLI prints it and exits 1.

    ``connection_lost`` is set when the server stopped answering, so callers skip further
    round trips (each would wait out the driver's retry time) and report at once.
    """

    def __init__(self, message: str, *, connection_lost: bool = False) -> None:
        super().__init__(message)
        self.connection_lost = connection_lost
