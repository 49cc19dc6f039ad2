"""The service's bearer token: from HSG_SERVICE_TOKEN, else a file made on first start.

The file is created 0600 with `O_EXCL` (never world-readable, even for an instant, and
never overwritten by a second service starting at once); tokens are compared in constant
time.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

TOKEN_ENV = "HSG_SERVICE_TOKEN"


def token_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "token"


def load_or_create_token(state_dir: str | Path) -> str:
    """The environment's token, else the state dir's token file (created if missing)."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    path = token_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"{path} is empty: delete it to make a new token") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def check_bearer(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries exactly this token."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def service_id(state_dir: str | Path) -> str:
    """This service's id (made on first start): the owner mark on its jobs' nodes."""
    path = Path(state_dir) / "service_id"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = secrets.token_hex(8)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value
