"""Validate JSON-shaped data into msgspec Structs, with every problem and its path.

msgspec checks types and ``Meta`` constraints but stops at the first error; :func:`validate`
walks a Struct's fields (``msgspec.structs.fields``), nested Structs, dicts and lists, lets
``msgspec.convert`` check each leaf, and collects every error with its location.  Two hooks
travel in ``Meta(extra=...)``: :func:`before` turns a raw value into what msgspec then checks
(``"90s"`` into 90.0), :func:`after` checks or normalises the converted value (a readable
cron expression).  Checks across fields belong in the Struct's ``__post_init__``; they run
once every field is valid, and their ValueError is the Struct's problem.
"""

from __future__ import annotations

import enum
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union

import msgspec

__all__ = ["ValidationError", "after", "before", "validate"]

T = TypeVar("T")
Loc = tuple[str | int, ...]
_FAILED: Any = object()  # a value whose problems were recorded
_WHERE = re.compile(r"\.([^.\[]+)|\[(\d+)\]")  # the parts of msgspec's "$.a.b[0]"


class ValidationError(msgspec.ValidationError):
    """Every problem of one validation: ``problems`` is a list of (location, message)."""

    def __init__(self, problems: list[tuple[Loc, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc)) or '$'}: {message}" for loc, message in problems))


def before(func: Callable[[Any], Any]) -> msgspec.Meta:
    """``Annotated[T, before(f)]``: ``f(raw)`` (ValueError: the problem) gives what T's check gets."""
    return msgspec.Meta(extra={"before": func})


def after(func: Callable[[Any], Any]) -> msgspec.Meta:
    """``Annotated[T, after(f)]``: ``f(value)`` checks the converted value and returns the value kept."""
    return msgspec.Meta(extra={"after": func})


def validate(cls: type[T], data: Any) -> T:
    """``data`` (JSON-shaped, lax: ``"5"`` is 5) as a ``cls``; raise ValidationError with every problem."""
    problems: list[tuple[Loc, str]] = []
    value = _value(cls, data, (), problems)
    if problems:
        raise ValidationError(problems)
    return typing.cast(T, value)


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> tuple[tuple[msgspec.structs.FieldInfo, ...], dict[str, None], bool]:
    """The fields, their JSON names (in order) and whether other keys are errors; read once per class."""
    fields = msgspec.structs.fields(cls)
    return fields, dict.fromkeys(f.encode_name for f in fields), bool(cls.__struct_config__.forbid_unknown_fields)


def _hook(func: Callable[[Any], Any], value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    try:
        return func(value)
    except (ValueError, TypeError) as exc:
        problems.append((loc, str(exc)))
        return _FAILED


def _value(tp: Any, raw: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    base, metas = (typing.get_args(tp)[0], tp.__metadata__) if typing.get_origin(tp) is Annotated else (tp, ())
    hooks: list[dict[str, Any]] = [meta.extra for meta in metas if isinstance(meta, msgspec.Meta) and meta.extra]
    for hook in hooks:
        if "before" in hook and (raw := _hook(hook["before"], raw, loc, problems)) is _FAILED:
            return _FAILED
    origin, args = typing.get_origin(base), typing.get_args(base)
    arms = [arm for arm in args if arm is not type(None)]
    if isinstance(base, type) and issubclass(base, msgspec.Struct) and isinstance(raw, Mapping):
        value = _struct(base, raw, loc, problems)
    elif origin in (Union, types.UnionType) and raw is not None and len(arms) == 1:
        value = _value(arms[0], raw, loc, problems)
    elif origin is dict and isinstance(raw, Mapping):
        items = {key: _value(args[1], item, (*loc, key), problems) for key, item in raw.items()}
        value = _leaf(tp, items, loc, problems) if _FAILED not in items.values() else _FAILED
    elif origin in (list, tuple) and isinstance(raw, list) and (origin is list or args[-1] is Ellipsis):
        listed = [_value(args[0], item, (*loc, index), problems) for index, item in enumerate(raw)]
        value = _leaf(tp, listed, loc, problems) if _FAILED not in listed else _FAILED
    else:
        value = _leaf(tp, raw, loc, problems)
    for hook in hooks:
        if "after" in hook and value is not _FAILED:
            value = _hook(hook["after"], value, loc, problems)
    return value


def _struct(cls: type[msgspec.Struct], raw: Mapping[str, Any], loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    fields, names, forbid = _fields(cls)
    found = len(problems)
    values = {}
    for field in fields:
        if field.encode_name in raw:
            values[field.name] = _value(field.type, raw[field.encode_name], (*loc, field.encode_name), problems)
        elif field.required:
            problems.append(((*loc, field.encode_name), "Object missing required field"))
    for key in raw:
        if forbid and key not in names:
            problems.append(((*loc, key), f"Object contains unknown field; expected one of {', '.join(names)}"))
    if len(problems) > found:
        return _FAILED
    try:
        return cls(**values)  # the fields are valid: __post_init__ checks them together
    except (ValueError, TypeError) as exc:
        problems.append((loc, str(exc)))
        return _FAILED


def _leaf(tp: Any, raw: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    try:
        return msgspec.convert(raw, tp, strict=False)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        if message.startswith("Invalid enum value"):  # it quotes the input, which may be a secret
            message = f"Expected one of {', '.join(map(repr, _choices(tp)))}"
        inner = tuple(key or int(index) for key, index in _WHERE.findall(where.rstrip("`")))
        problems.append(((*loc, *inner), message))
        return _FAILED


def _choices(tp: Any) -> list[Any]:
    """The values a Literal or Enum (maybe inside Annotated or ``| None``) allows."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return list(args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [member.value for member in tp]
    return [choice for arg in args if arg is not type(None) for choice in _choices(arg)]
