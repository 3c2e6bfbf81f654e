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
import re
import types
import typing
from collections.abc import Callable
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
    if type(data) is dict and not data and isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        # Nothing given (a job's options left out): its defaults, without working out a plan for every field.
        # A required field or a failing __post_init__ raises here; the walk below then says which.
        try:
            return cls()
        except (TypeError, ValueError):
            pass
    problems: list[tuple[Loc, str]] = []
    value = _value(_plan(cls), data, (), problems)
    if problems:
        raise ValidationError(problems)
    return typing.cast(T, value)


class _Plan:
    """How to walk one annotation, worked out once: its hooks, its shape, its fields or items.

    What lies below (a Struct's fields, an item's plan, whether any hook is below) is worked out
    when a walk first needs it: settings that leave out ``metrics`` or ``coordination`` never pay
    for evaluating those Structs' annotations.
    """

    __slots__ = ("_box", "_fields", "_hooked", "_inner", "after", "before", "cls", "forbid", "kind", "names", "tp")

    def __init__(self, tp: Any):
        self.tp = tp
        self._box: type[msgspec.Struct] | None = None
        self._fields: tuple[tuple[str, str, bool, Any], ...] | None = None  # name, JSON name, required, annotation
        self._hooked: bool | None = None
        base, metas = (typing.get_args(tp)[0], tp.__metadata__) if typing.get_origin(tp) is Annotated else (tp, ())
        extras = [meta.extra for meta in metas if isinstance(meta, msgspec.Meta) and meta.extra]
        self.before = tuple(extra["before"] for extra in extras if "before" in extra)
        self.after = tuple(extra["after"] for extra in extras if "after" in extra)
        origin, args = typing.get_origin(base), typing.get_args(base)
        arms = [arm for arm in args if arm is not type(None)]
        self.kind, self._inner = "leaf", None  # _inner: an optional's, a dict's value, a list's item annotation
        if isinstance(base, type) and issubclass(base, msgspec.Struct):
            self.kind, self.cls = "struct", base
        elif origin in (Union, types.UnionType) and len(arms) == 1:
            self.kind, self._inner = "optional", arms[0]
        elif origin is dict:
            self.kind, self._inner = "dict", args[1]
        elif origin is list or (origin is tuple and args[-1] is Ellipsis):
            self.kind, self._inner = "list", args[0]

    @property
    def fields(self) -> tuple[tuple[str, str, bool, Any], ...]:
        """A Struct's fields (with ``names`` and ``forbid``), read at the first walk into it."""
        if self._fields is None:
            fields = msgspec.structs.fields(self.cls)
            self.names = dict.fromkeys(f.encode_name for f in fields)  # ordered, for the message
            self.forbid = bool(self.cls.__struct_config__.forbid_unknown_fields)
            self._fields = tuple((f.name, f.encode_name, f.required, f.type) for f in fields)
        return self._fields

    @property
    def inner(self) -> _Plan:
        return _plan(self._inner)

    @property
    def hooked(self) -> bool:
        """A hook here or anywhere below; without one, one msgspec.convert does it all (the walk only finds
        every problem)."""
        if self._hooked is None:
            below = [field[3] for field in self.fields] if self.kind == "struct" else []
            if self._inner is not None:
                below.append(self._inner)
            self._hooked = bool(self.before or self.after) or any(_plan(tp).hooked for tp in below)
        return self._hooked

    @property
    def box(self) -> type[msgspec.Struct]:
        """A one-field Struct of ``tp``, made when a value is first converted through it.

        msgspec caches what it worked out about a type on a Struct class only: convert({"value": raw},
        box) costs 1-2 µs where convert(raw, Annotated[...]) costs 5-30 µs, every time.
        """
        if self._box is None:
            self._box = msgspec.defstruct("Value", [("value", self.tp)])
        return self._box


_PLANS: dict[int, _Plan] = {}  # id(annotation) -> plan; the plan holds the annotation, so the id stays its own


def _plan(tp: Any) -> _Plan:
    plan = _PLANS.get(id(tp))
    if plan is None:
        plan = _PLANS[id(tp)] = _Plan(tp)
    return plan


def _hook(func: Callable[[Any], Any], value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    try:
        return func(value)
    except (ValueError, TypeError) as exc:
        problems.append((loc, str(exc)))
        return _FAILED


def _value(plan: _Plan, raw: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    if not plan.hooked or plan.kind == "leaf" and not plan.before:
        value = _leaf(plan, raw, loc, problems if plan.kind == "leaf" else None)
        if value is not _FAILED or plan.kind == "leaf":
            return value if value is _FAILED else _after(plan, value, loc, problems)
    for func in plan.before:
        if (raw := _hook(func, raw, loc, problems)) is _FAILED:
            return _FAILED
    if plan.kind == "struct" and isinstance(raw, dict):
        value = _struct(plan, raw, loc, problems)
    elif plan.kind == "optional" and raw is not None:
        value = _value(plan.inner, raw, loc, problems)
    elif plan.kind == "dict" and isinstance(raw, dict):
        items = {key: _value(plan.inner, item, (*loc, key), problems) for key, item in raw.items()}
        value = _leaf(plan, items, loc, problems) if _FAILED not in items.values() else _FAILED
    elif plan.kind == "list" and isinstance(raw, list):
        listed = [_value(plan.inner, item, (*loc, index), problems) for index, item in enumerate(raw)]
        value = _leaf(plan, listed, loc, problems) if _FAILED not in listed else _FAILED
    else:
        value = _leaf(plan, raw, loc, problems)
    return value if value is _FAILED else _after(plan, value, loc, problems)


def _after(plan: _Plan, value: Any, loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    for func in plan.after:
        if (value := _hook(func, value, loc, problems)) is _FAILED:
            break
    return value


def _struct(plan: _Plan, raw: dict[str, Any], loc: Loc, problems: list[tuple[Loc, str]]) -> Any:
    found = len(problems)
    values: dict[str, Any] = {}
    for name, key, required, tp in plan.fields:
        if key in raw:
            values[name] = _value(_plan(tp), raw[key], (*loc, key), problems)
        elif required:
            problems.append(((*loc, key), "Object missing required field"))
    if plan.forbid:
        for key in raw:
            if key not in plan.names:
                problems.append(
                    ((*loc, key), f"Object contains unknown field; expected one of {', '.join(plan.names)}")
                )
    if len(problems) > found:
        return _FAILED
    try:
        return plan.cls(**values)  # the fields are valid: __post_init__ checks them together
    except (ValueError, TypeError) as exc:
        problems.append((loc, str(exc)))
        return _FAILED


def _leaf(plan: _Plan, raw: Any, loc: Loc, problems: list[tuple[Loc, str]] | None) -> Any:
    """``msgspec.convert``; its error, if any, goes into ``problems`` (when given) at its full path."""
    try:
        return msgspec.convert({"value": raw}, plan.box, strict=False).value  # type: ignore[attr-defined]
    except msgspec.ValidationError as exc:
        if problems is None:
            return _FAILED
        message, _, where = str(exc).partition(" - at `$.value")
        if message.startswith("Invalid enum value"):  # it quotes the input, which may be a secret
            message = f"Expected one of {', '.join(map(repr, _choices(plan.tp)))}"
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
