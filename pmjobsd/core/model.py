"""Frozen settings models: one class definition gives the validator, the dump and the JSON Schema.

The settings and every job's options are declared as classes with annotated fields
(``BaseModel``, ``Field``, ``field_validator``, ``model_validator``, ``Annotated[...,
BeforeValidator(...)]``), the subset of pydantic's interface they use.  Validation is
pydantic's lax mode for JSON input, with pydantic's words for every error (``Input should be
a valid integer``, ``Field required``, ...) and every problem reported at once with its
location; the JSON Schema is the one pydantic 2 generated for the same classes.

Why not pydantic itself: importing it and building these models took ~150 ms and ~13 MB of
every start and every command, more than the whole start-up budget (issue 16).  This module
imports nothing beyond the standard library's core and compiles a class on first use.
"""

from __future__ import annotations

import enum
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Union

__all__ = [
    "AfterValidator",
    "BaseModel",
    "BeforeValidator",
    "ByteSize",
    "ConfigDict",
    "Field",
    "ValidationError",
    "WithJsonSchema",
    "field_validator",
    "model_validator",
]

_MISSING: Any = object()
_FAILED: Any = object()  # a value whose errors were recorded
_I64 = 2**63


class ValidationError(ValueError):
    """Every problem found in one validation; ``errors()`` lists them as pydantic does (type, loc, msg, input)."""

    def __init__(self, title: str, errors: list[dict[str, Any]]):
        self.title = title
        self._errors = errors
        super().__init__(self.__str__())

    def errors(self) -> list[dict[str, Any]]:
        return [dict(error) for error in self._errors]

    def error_count(self) -> int:
        return len(self._errors)

    def __str__(self) -> str:
        count = len(self._errors)
        lines = [f"{count} validation error{'' if count == 1 else 's'} for {self.title}"]
        for error in self._errors:
            lines.append(".".join(str(part) for part in error["loc"]) or "__root__")
            shown = repr(error["input"])
            if len(shown) > 100:
                shown = shown[:49] + "..." + shown[-48:]
            lines.append(
                f"  {error['msg']} [type={error['type']}, input_value={shown}, input_type={type(error['input']).__name__}]"
            )
        return "\n".join(lines)


Errors = list  # of error dicts, appended to while validating


def _error(errors: Errors, loc: tuple, kind: str, msg: str, value: Any) -> Any:
    errors.append({"type": kind, "loc": loc, "msg": msg, "input": value})
    return _FAILED


def _number(value: float) -> str:
    """A bound as pydantic's messages show it: ``10`` for 10.0, ``0.5`` for 0.5."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


# --- what a field's annotation may carry -------------------------------------------------------------


class BeforeValidator:
    """``Annotated[T, BeforeValidator(f)]``: ``f(raw)`` runs before T's own check; a ValueError is the field's error."""

    def __init__(self, func: Callable[[Any], Any]):
        self.func = func


class AfterValidator:
    """``Annotated[T, AfterValidator(f)]``: ``f(value)`` runs on the value T's check returned."""

    def __init__(self, func: Callable[[Any], Any]):
        self.func = func


class WithJsonSchema:
    """``Annotated[T, WithJsonSchema({...})]``: the JSON Schema shown for T instead of the generated one."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema


def ConfigDict(**options: Any) -> dict[str, Any]:
    """A model's options; every model here is frozen and forbids unknown keys, whatever is given."""
    return dict(options)


class FieldInfo:
    """A field's default and constraints (see :func:`Field`)."""

    def __init__(
        self,
        default: Any = _MISSING,
        *,
        default_factory: Callable[[], Any] | None = None,
        description: str | None = None,
        ge: float | None = None,
        gt: float | None = None,
        le: float | None = None,
        pattern: str | None = None,
    ):
        self.default = default
        self.default_factory = default_factory
        self.description = description
        self.bounds = {key: value for key, value in (("ge", ge), ("gt", gt), ("le", le)) if value is not None}
        self.pattern = pattern

    @property
    def required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None


def Field(default: Any = _MISSING, **kwargs: Any) -> Any:
    """A field's default (or ``default_factory``), ``description`` and constraints ``ge``, ``gt``, ``le``, ``pattern``."""
    return FieldInfo(default, **kwargs)


def field_validator(*names: str) -> Callable[[Any], Any]:
    """Decorate a ``@classmethod`` ``(cls, value) -> value`` run after the named fields' own checks."""

    def mark(method: Any) -> Any:
        func = method.__func__ if isinstance(method, classmethod) else method
        setattr(func, "__field_validator__", names)  # noqa: B010 - read back by _Compiled
        return method

    return mark


def model_validator(*, mode: Literal["after"]) -> Callable[[Any], Any]:
    """Decorate a method ``(self) -> self`` run once every field is valid; its ValueError has the model's location."""

    def mark(method: Any) -> Any:
        method.__model_validator__ = mode
        return method

    return mark


class ByteSize(int):
    """A number of bytes, from an int or a string such as ``'10MB'`` (1000s) or ``'1KiB'`` (1024s)."""

    byte_sizes: ClassVar[dict[str, float]] = {
        "b": 1,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "tb": 10**12,
        "pb": 10**15,
        "eb": 10**18,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
        "tib": 2**40,
        "pib": 2**50,
        "eib": 2**60,
        "bit": 1 / 8,
        "kbit": 10**3 / 8,
        "mbit": 10**6 / 8,
        "gbit": 10**9 / 8,
        "tbit": 10**12 / 8,
        "pbit": 10**15 / 8,
        "ebit": 10**18 / 8,
        "kibit": 2**10 / 8,
        "mibit": 2**20 / 8,
        "gibit": 2**30 / 8,
        "tibit": 2**40 / 8,
        "pibit": 2**50 / 8,
        "eibit": 2**60 / 8,
    }
    byte_sizes.update({k.lower()[0]: v for k, v in list(byte_sizes.items()) if "i" not in k})
    byte_string_pattern = r"^\s*(\d*\.?\d+)\s*(\w+)?"
    byte_string_re = re.compile(byte_string_pattern, re.IGNORECASE)


# --- validators of each kind of annotation ---------------------------------------------------------------


class _Type:
    """Checks one kind of value: ``check(value, loc, errors)`` returns it (converted) or _FAILED."""

    def check(self, value: Any, loc: tuple, errors: Errors) -> Any:
        raise NotImplementedError

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def dump(self, value: Any, json: bool) -> Any:
        return value

    def titled(self) -> bool:
        """Whether a field of this kind gets a ``title`` in the schema (a reference to a model does not)."""
        return True


class _AnyType(_Type):
    def check(self, value, loc, errors):
        return value

    def schema(self, defs):
        return {}

    def dump(self, value, json):
        return _dump_any(value, json)


def _dump_any(value: Any, json: bool) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json" if json else "python")
    if json:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_dump_any(item, json) for item in value]
        if isinstance(value, dict):
            return {key: _dump_any(item, json) for key, item in value.items()}
    return value


class _Bool(_Type):
    _TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
    _FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

    def check(self, value, loc, errors):
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            if value in (0, 1):
                return bool(value)
            if -_I64 <= value < _I64:
                return _error(
                    errors, loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", value
                )
        elif isinstance(value, float) and value.is_integer() and -_I64 <= value < _I64:
            if value in (0.0, 1.0):
                return bool(value)
            return _error(
                errors, loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", value
            )
        elif isinstance(value, (str, bytes)):
            word = (value.decode(errors="replace") if isinstance(value, bytes) else value).lower()
            if word in self._TRUE:
                return True
            if word in self._FALSE:
                return False
            return _error(
                errors, loc, "bool_parsing", "Input should be a valid boolean, unable to interpret input", value
            )
        return _error(errors, loc, "bool_type", "Input should be a valid boolean", value)

    def schema(self, defs):
        return {"type": "boolean"}


class _Bounded(_Type):
    """A number with ``ge``/``gt``/``le`` bounds."""

    _WORDS = {"ge": "greater than or equal to", "gt": "greater than", "le": "less than or equal to"}
    _KEYS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum"}
    _TESTS: ClassVar[dict[str, Callable[[Any, Any], bool]]] = {
        "ge": lambda v, b: v >= b,
        "gt": lambda v, b: v > b,
        "le": lambda v, b: v <= b,
    }
    _KINDS = {"ge": "greater_than_equal", "gt": "greater_than", "le": "less_than_equal"}

    def __init__(self, bounds: Mapping[str, float] | None = None):
        self.bounds = dict(bounds or {})

    def bounded(self, value: Any, loc: tuple, errors: Errors) -> Any:
        for key in ("le", "ge", "gt"):  # pydantic's order: what a NaN is told first
            if key in self.bounds and not self._TESTS[key](value, self.bounds[key]):
                message = f"Input should be {self._WORDS[key]} {_number(self.bounds[key])}"
                return _error(errors, loc, self._KINDS[key], message, value)
        return value

    def bound_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        for key in ("ge", "gt", "le"):
            if key in self.bounds:
                schema[self._KEYS[key]] = self.bounds[key]
        return schema


_INT_TEXT = re.compile(r"[+-]?\d+(?:_\d+)*(?:\.0*)?")


class _Int(_Bounded):
    def check(self, value, loc, errors):
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, int):
            pass
        elif isinstance(value, float):
            if not math.isfinite(value):
                return _error(errors, loc, "finite_number", "Input should be a finite number", value)
            if not -_I64 <= value < _I64:
                message = "Unable to parse input string as an integer, exceeded maximum size"
                return _error(errors, loc, "int_parsing_size", message, value)
            if not value.is_integer():
                message = "Input should be a valid integer, got a number with a fractional part"
                return _error(errors, loc, "int_from_float", message, value)
            value = int(value)
        elif isinstance(value, (str, bytes)):
            text = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
            if not _INT_TEXT.fullmatch(text):
                message = "Input should be a valid integer, unable to parse string as an integer"
                return _error(errors, loc, "int_parsing", message, value)
            value = int(text.split(".")[0])
        else:
            return _error(errors, loc, "int_type", "Input should be a valid integer", value)
        return self.bounded(value, loc, errors)

    def schema(self, defs):
        return self.bound_schema({"type": "integer"})


class _Float(_Bounded):
    def check(self, value, loc, errors):
        if isinstance(value, (bool, int)):
            value = float(value)
        elif isinstance(value, float):
            pass
        elif isinstance(value, (str, bytes)):
            text = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
            try:
                value = float(text)
            except ValueError:
                message = "Input should be a valid number, unable to parse string as a number"
                return _error(errors, loc, "float_parsing", message, value)
        else:
            return _error(errors, loc, "float_type", "Input should be a valid number", value)
        return self.bounded(value, loc, errors)

    def schema(self, defs):
        return self.bound_schema({"type": "number"})


class _Str(_Type):
    def __init__(self, pattern: str | None = None):
        self.pattern = pattern
        self.regex = re.compile(pattern) if pattern else None

    def check(self, value, loc, errors):
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                return _error(
                    errors,
                    loc,
                    "string_unicode",
                    "Input should be a valid string, unable to parse raw data as a unicode string",
                    value,
                )
        if not isinstance(value, str):
            return _error(errors, loc, "string_type", "Input should be a valid string", value)
        if self.regex is not None and not self.regex.search(value):
            return _error(
                errors, loc, "string_pattern_mismatch", f"String should match pattern '{self.pattern}'", value
            )
        return value

    def schema(self, defs):
        schema: dict[str, Any] = {"type": "string"}
        if self.pattern:
            schema["pattern"] = self.pattern
        return schema


class _ByteSizeType(_Bounded):
    _UNPARSED = "could not parse value and unit from byte string"

    def check(self, value, loc, errors):
        if isinstance(value, str):
            if not ByteSize.byte_string_re.match(value):
                # The integer branch of pydantic's union reads a string too ("-0", "+5").
                text = value.strip()
                if not _INT_TEXT.fullmatch(text) or int(text.split(".")[0]) < 0:
                    return _error(errors, loc, "byte_size", self._UNPARSED, value)
                value = int(text.split(".")[0])
        elif isinstance(value, bool) or (isinstance(value, int) and value >= 0):
            value = int(value)
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 <= value < _I64:
            value = int(value)
        else:
            return _error(errors, loc, "byte_size", self._UNPARSED, value)
        try:
            size = ByteSize(int(value))
        except ValueError:
            scalar, unit = ByteSize.byte_string_re.match(str(value)).groups()  # type: ignore[union-attr]
            unit = unit or "b"
            multiplier = ByteSize.byte_sizes.get(unit.lower())
            if multiplier is None:
                return _error(errors, loc, "byte_size_unit", f"could not interpret byte unit: {unit}", value)
            size = ByteSize(int(float(scalar) * multiplier))
        return self.bounded(size, loc, errors)

    def schema(self, defs):
        schema: dict[str, Any] = {
            "anyOf": [{"pattern": ByteSize.byte_string_pattern, "type": "string"}, {"minimum": 0, "type": "integer"}]
        }
        schema.update(self.bounds)  # as pydantic shows them for this type: under their own names
        return schema

    def dump(self, value, json):
        return int(value)


class _Literal(_Type):
    def __init__(self, values: tuple[Any, ...]):
        self.values = values

    def check(self, value, loc, errors):
        for allowed in self.values:
            if value == allowed and type(value) is type(allowed):
                return allowed
        return _error(errors, loc, "literal_error", f"Input should be {_choices(self.values)}", value)

    def schema(self, defs):
        kind = {str: "string", int: "integer", bool: "boolean"}.get(type(self.values[0]))
        schema: dict[str, Any] = {"const": self.values[0]} if len(self.values) == 1 else {"enum": list(self.values)}
        if kind and all(type(v) is type(self.values[0]) for v in self.values):
            schema["type"] = kind
        return schema


def _choices(values: tuple[Any, ...]) -> str:
    shown = [repr(value) for value in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


class _Enum(_Type):
    def __init__(self, cls: type[enum.Enum]):
        self.cls = cls

    def check(self, value, loc, errors):
        if isinstance(value, self.cls):
            return value
        for member in self.cls:
            if type(value) is type(member.value) and value == member.value:
                return member
        values = tuple(member.value for member in self.cls)
        return _error(errors, loc, "enum", f"Input should be {_choices(values)}", value)

    def schema(self, defs):
        values = [member.value for member in self.cls]
        schema: dict[str, Any] = {"enum": values, "title": self.cls.__name__}
        if all(isinstance(v, str) for v in values):
            schema["type"] = "string"
        return schema

    def dump(self, value, json):
        return value.value if json else value


class _Sequence(_Type):
    def __init__(self, item: _Type, as_tuple: bool):
        self.item = item
        self.as_tuple = as_tuple

    def check(self, value, loc, errors):
        if not isinstance(value, (list, tuple, set, frozenset)):
            kind = "tuple" if self.as_tuple else "list"
            return _error(errors, loc, f"{kind}_type", f"Input should be a valid {kind}", value)
        items, failed = [], False
        for index, item in enumerate(value):
            checked = self.item.check(item, (*loc, index), errors)
            failed = failed or checked is _FAILED
            items.append(checked)
        if failed:
            return _FAILED
        return tuple(items) if self.as_tuple else items

    def schema(self, defs):
        return {"items": self.item.schema(defs), "type": "array"}

    def dump(self, value, json):
        items = [self.item.dump(item, json) for item in value]
        return tuple(items) if self.as_tuple and not json else items


class _Dict(_Type):
    def __init__(self, value: _Type):
        self.value = value

    def check(self, value, loc, errors):
        if not isinstance(value, Mapping):
            return _error(errors, loc, "dict_type", "Input should be a valid dictionary", value)
        result, failed = {}, False
        for key, item in value.items():
            if not isinstance(key, str):
                _error(errors, (*loc, key, "[key]"), "string_type", "Input should be a valid string", key)
                failed = True
                continue
            checked = self.value.check(item, (*loc, key), errors)
            failed = failed or checked is _FAILED
            result[key] = checked
        return _FAILED if failed else result

    def schema(self, defs):
        inner = self.value.schema(defs)
        return {"additionalProperties": inner or True, "type": "object"}

    def dump(self, value, json):
        return {key: self.value.dump(item, json) for key, item in value.items()}


class _Nullable(_Type):
    def __init__(self, inner: _Type):
        self.inner = inner

    def check(self, value, loc, errors):
        return None if value is None else self.inner.check(value, loc, errors)

    def schema(self, defs):
        inner = self.inner.schema(defs)
        choices = inner["anyOf"] if list(inner) == ["anyOf"] else [inner]  # a bare anyOf is merged, as pydantic does
        return {"anyOf": [*choices, {"type": "null"}]}

    def dump(self, value, json):
        return None if value is None else self.inner.dump(value, json)

    def titled(self):
        return self.inner.titled()


class _ModelType(_Type):
    def __init__(self, cls: type[BaseModel]):
        self.cls = cls

    def check(self, value, loc, errors):
        if isinstance(value, self.cls):
            return value
        if not isinstance(value, Mapping):
            message = f"Input should be a valid dictionary or instance of {self.cls.__name__}"
            return _error(errors, loc, "model_type", message, value)
        return self.cls._build(value, loc, errors)

    def schema(self, defs):
        name = self.cls.__name__
        if name not in defs:
            defs[name] = {}  # reserved first: a model that refers to itself ends here
            defs[name] = self.cls._object_schema(defs)
        return {"$ref": f"#/$defs/{name}"}

    def dump(self, value, json):
        return value.model_dump(mode="json" if json else "python")

    def titled(self):
        return False


class _Annotated(_Type):
    """A kind with before/after validators and, maybe, a schema of its own."""

    def __init__(self, inner: _Type, before: list, after: list, schema: dict[str, Any] | None):
        self.inner, self.before, self.after, self.fixed = inner, before, after, schema

    def check(self, value, loc, errors):
        for func in self.before:
            value = _call(func, value, loc, errors)
            if value is _FAILED:
                return value
        value = self.inner.check(value, loc, errors)
        for func in self.after:
            if value is _FAILED:
                return value
            value = _call(func, value, loc, errors)
        return value

    def schema(self, defs):
        return dict(self.fixed) if self.fixed is not None else self.inner.schema(defs)

    def dump(self, value, json):
        return self.inner.dump(value, json)

    def titled(self):
        return self.inner.titled()


def _call(func: Callable[[Any], Any], value: Any, loc: tuple, errors: Errors) -> Any:
    try:
        return func(value)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            errors.extend({**error, "loc": (*loc, *error["loc"])} for error in exc._errors)
            return _FAILED
        return _error(errors, loc, "value_error", f"Value error, {exc}", value)


def _compile(annotation: Any, info: FieldInfo) -> _Type:
    """The checker of an annotation; ``info``'s bounds and pattern apply to its innermost number or string."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        before = [m.func for m in annotation.__metadata__ if isinstance(m, BeforeValidator)]
        after = [m.func for m in annotation.__metadata__ if isinstance(m, AfterValidator)]
        fixed = next((m.schema for m in annotation.__metadata__ if isinstance(m, WithJsonSchema)), None)
        return _Annotated(_compile(args[0], info), before, after, fixed)
    if origin in (Union, types.UnionType):
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return _Nullable(_compile(rest[0], info))
        raise TypeError(f"unions other than X | None are not supported: {annotation!r}")
    if origin is Literal:
        return _Literal(args)
    if origin in (list, tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"only tuple[X, ...] is supported: {annotation!r}")
        return _Sequence(_compile(args[0], FieldInfo()), as_tuple=origin is tuple)
    if origin is dict:
        return _Dict(_compile(args[1], FieldInfo()))
    if annotation is Any:
        return _AnyType()
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return _ModelType(annotation)
        if issubclass(annotation, enum.Enum):
            return _Enum(annotation)
        if annotation is bool:
            return _Bool()
        if annotation is ByteSize:
            return _ByteSizeType(info.bounds)
        if annotation is int:
            return _Int(info.bounds)
        if annotation is float:
            return _Float(info.bounds)
        if annotation is str:
            return _Str(info.pattern)
    raise TypeError(f"unsupported annotation {annotation!r}")


# --- the models ---------------------------------------------------------------------------------------


def _field_annotations(cls: type[BaseModel]) -> dict[str, Any]:
    """Each field's annotation, evaluated where its class was defined (``from __future__ import annotations``)."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        annotations = vars(klass).get("__annotations__", {})
        if not annotations:
            continue
        module = vars(sys.modules[klass.__module__]) if klass.__module__ in sys.modules else {}
        scope = dict(vars(klass))
        for name, annotation in annotations.items():
            if name in cls.__field_names__:
                hints[name] = eval(_code(annotation), module, scope) if isinstance(annotation, str) else annotation
    return hints


_CODE: dict[str, Any] = {}  # annotation text -> its compiled expression ("bool", "Duration", ... recur)


def _code(annotation: str) -> Any:
    code = _CODE.get(annotation)
    if code is None:
        code = _CODE[annotation] = compile(annotation, "<annotation>", "eval")
    return code


class _Compiled:
    def __init__(self, cls: type[BaseModel]):
        hints = _field_annotations(cls)
        self.fields: dict[str, FieldInfo] = {}
        self.types: dict[str, _Type] = {}
        for name in cls.__field_names__:
            info = cls.__field_infos__[name]
            self.fields[name] = info
            self.types[name] = _compile(hints[name], info)
        self.field_validators: dict[str, list[Callable[[Any], Any]]] = {}
        self.model_validators: list[Callable[[Any], Any]] = []
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                func = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
                for name in getattr(func, "__field_validator__", ()):
                    self.field_validators.setdefault(name, []).append(getattr(cls, func.__name__))
                if getattr(func, "__model_validator__", None) == "after":
                    self.model_validators.append(func)


_M = typing.TypeVar("_M", bound="BaseModel")


class BaseModel:
    """A frozen record validated from JSON-like data; unknown keys are errors.

    Subclasses declare fields as annotated class attributes, with a default or a
    :func:`Field`.  ``model_validate`` (or the constructor) checks every field and raises one
    :class:`ValidationError` listing every problem.
    """

    model_config: ClassVar[dict[str, Any]] = {}
    model_fields: ClassVar[dict[str, FieldInfo]] = {}  # name -> FieldInfo, in declaration order
    __field_names__: ClassVar[tuple[str, ...]] = ()
    __field_infos__: ClassVar[dict[str, FieldInfo]] = {}
    __compiled__: ClassVar[_Compiled | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        infos = dict(cls.__field_infos__)
        names = list(cls.__field_names__)
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            if name.startswith("_") or "ClassVar" in str(annotation):
                continue
            value = vars(cls).get(name, _MISSING)
            info = value if isinstance(value, FieldInfo) else FieldInfo(value)
            if name in vars(cls):
                delattr(cls, name)  # the instance's value, not the class attribute, is what is read
            if name not in infos:
                names.append(name)
            infos[name] = info
        cls.__field_names__ = tuple(names)
        cls.__field_infos__ = infos
        cls.model_fields = {name: infos[name] for name in names}
        cls.__compiled__ = None

    @classmethod
    def _compiled(cls) -> _Compiled:
        compiled = cls.__dict__.get("__compiled__")
        if compiled is None:
            compiled = _Compiled(cls)
            cls.__compiled__ = compiled
        return compiled

    @classmethod
    def _build(cls, data: Mapping[str, Any], loc: tuple, errors: Errors) -> Any:
        compiled = cls._compiled()
        values: dict[str, Any] = {}
        failed = False
        before = len(errors)
        for name, info in compiled.fields.items():
            if name in data:
                value = compiled.types[name].check(data[name], (*loc, name), errors)
                for func in compiled.field_validators.get(name, ()):
                    if value is _FAILED:
                        break
                    value = _call(func, value, (*loc, name), errors)
            elif info.default_factory is not None:
                value = info.default_factory()
            elif info.default is not _MISSING:
                value = info.default
            else:
                value = _error(errors, (*loc, name), "missing", "Field required", dict(data))
            failed = failed or value is _FAILED
            values[name] = value
        for key in data:
            if key not in compiled.fields:
                _error(errors, (*loc, key), "extra_forbidden", "Extra inputs are not permitted", data[key])
        if failed or len(errors) > before:
            return _FAILED
        instance = object.__new__(cls)
        object.__setattr__(instance, "__dict__", values)
        for func in compiled.model_validators:
            try:
                instance = func(instance)
            except ValueError as exc:
                return _error(errors, loc, "value_error", f"Value error, {exc}", dict(data))
        return instance

    @classmethod
    def model_validate(cls: type[_M], data: Any) -> _M:
        """A valid instance from ``data`` (a mapping, or an instance); raise ValidationError with every problem."""
        errors: Errors = []
        result = _ModelType(cls).check(data, (), errors)
        if result is _FAILED:
            raise ValidationError(cls.__name__, errors)
        instance: _M = result
        return instance

    def __init__(self, **data: Any):
        errors: Errors = []
        result = type(self)._build(data, (), errors)
        if result is _FAILED:
            raise ValidationError(type(self).__name__, errors)
        object.__setattr__(self, "__dict__", result.__dict__)

    def model_dump(self, *, mode: str = "python", exclude: set[str] | None = None) -> dict[str, Any]:
        """The fields as a dict; ``mode="json"``: JSON-ready values (enums as their values, tuples as lists)."""
        types_ = type(self)._compiled().types
        json = mode == "json"
        return {
            name: types_[name].dump(value, json)
            for name, value in self.__dict__.items()
            if not exclude or name not in exclude
        }

    def model_copy(self: _M, *, update: Mapping[str, Any] | None = None) -> _M:
        """A copy with ``update``'s values put in as they are (not validated), as pydantic does."""
        copy = object.__new__(type(self))
        object.__setattr__(copy, "__dict__", {**self.__dict__, **(update or {})})
        return copy

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this model, as pydantic 2 generated it (keys sorted, properties in field order)."""
        defs: dict[str, Any] = {}
        schema = cls._object_schema(defs)
        if defs:
            schema["$defs"] = defs
        result: dict[str, Any] = _sorted(schema)
        return result

    @classmethod
    def _object_schema(cls, defs: dict[str, Any]) -> dict[str, Any]:
        compiled = cls._compiled()
        properties: dict[str, Any] = {}
        required = []
        for name, info in compiled.fields.items():
            kind = compiled.types[name]
            field = kind.schema(defs)
            if info.required:
                required.append(name)
            elif info.default_factory is None:
                field["default"] = kind.dump(info.default, json=True) if info.default is not None else None
            if info.description:
                field["description"] = info.description
            if kind.titled() and "title" not in field:
                field["title"] = name.title().replace("_", " ")
            properties[name] = field
        schema: dict[str, Any] = {"additionalProperties": False, "properties": properties, "title": cls.__name__}
        if cls.__doc__:
            import inspect  # only `config schema` needs it

            schema["description"] = inspect.cleandoc(cls.__doc__)
        if required:
            schema["required"] = required
        schema["type"] = "object"
        return schema

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise TypeError(f"{type(self).__name__} is frozen: {name} cannot be deleted")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *(_hashable(v) for v in self.__dict__.values())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"{type(self).__name__}({fields})"


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


def _sorted(value: Any, parent: str | None = None) -> Any:
    """Keys sorted at every level except under ``properties`` and ``default`` (pydantic's order)."""
    if isinstance(value, dict):
        keys = value.keys() if parent in ("properties", "default") else sorted(value)
        return {key: _sorted(value[key], key) for key in keys}
    if isinstance(value, list):
        return [_sorted(item, parent) for item in value]
    return value
