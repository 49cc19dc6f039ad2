"""Typed dataclass configs that round-trip to JSON, shared by every part of hsg.

Unknown keys are rejected rather than ignored, because a silently dropped key is how a
config written by a newer or different tool ends up describing a different run than the one
loaded; JSON scalars are checked against the declared field types.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import fields
from typing import Any, Literal, TypeVar

T = TypeVar("T", bound="JsonConfig")


class ConfigError(ValueError):
    """A configuration that cannot describe a valid model, SAE or run."""


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Coerce JSON scalars to the field's declared type, or explain why not.

    JSON has one number type, so `1e-3` and `1000.0` arrive as floats; an int field accepts a
    float only when it is integral. Booleans are not accepted as numbers (JSON `true` is not 1).
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _check_type(name, value, non_none[0])
    if origin is Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{name} must be one of {typing.get_args(annotation)}, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    return value


class JsonConfig:
    """Shared `to_dict/from_dict/to_json/from_json` for flat dataclass configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown key(s) in {cls.__name__}: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        required = [
            n
            for n, f in known.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in data]
        if missing:
            raise ConfigError(f"missing key(s) in {cls.__name__}: {', '.join(missing)}")
        kwargs = {k: _check_type(k, v, hints[k]) for k, v in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)
