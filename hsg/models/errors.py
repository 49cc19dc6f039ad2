"""Errors of the models layer.

All are `ValueError` (or `FileNotFoundError`) subclasses so library callers can catch them
with the built-in types, while the CLI turns every one of them into a one-line message and a
non-zero exit instead of a traceback. Every message names the sequence, file or model it is
about, because "invalid input" without a name is useless on a 20,000-sequence batch.
"""

from __future__ import annotations


class InvalidSequenceError(ValueError):
    """A sequence holds a character the NT tokenizer cannot represent.

    ``position`` is 0-based (the message also gives it 1-based, as sequence viewers do).
    """

    def __init__(self, name: str, position: int | None, char: str | None, message: str):
        super().__init__(message)
        self.name = name
        self.position = position
        self.char = char


class SequenceTooLongError(ValueError):
    """A sequence needs more tokens than the model has positions for."""

    def __init__(self, name: str, n_tokens: int, max_tokens: int, message: str):
        super().__init__(message)
        self.name = name
        self.n_tokens = n_tokens
        self.max_tokens = max_tokens


class ModelNotFoundError(FileNotFoundError):
    """Neither a local model directory nor a hub id already in the local cache."""


class UnsupportedModelError(ValueError):
    """The config (or tokenizer files) describe an architecture this loader does not implement."""


class CheckpointError(ValueError):
    """The weights do not match the architecture their config describes."""
