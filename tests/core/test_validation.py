"""The field walker over msgspec: every problem at once, each with its path, in msgspec's words."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import pytest
from msgspec import Meta

from pmjobsd.core.settings import JobsSettings
from pmjobsd.core.validation import ValidationError, after, before, validate


def _shout(value: str) -> str:
    if value != value.upper():
        raise ValueError("expected capitals")
    return value


class Inner(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    size: Annotated[int, before(lambda raw: int(raw[:-1]) if isinstance(raw, str) else raw), Meta(ge=1)] = 1
    name: Annotated[str, after(_shout)]


class Outer(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    count: Annotated[int, Meta(ge=0)] = 0
    mode: Literal["a", "b"] = "a"
    inner: Inner | None = None
    many: dict[str, Inner] = {}
    items: list[Annotated[int, Meta(le=9)]] = []
    low: int = 0
    high: int = 1

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low is above high")


def problems(data) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        validate(Outer, data)
    assert isinstance(caught.value, msgspec.ValidationError)  # what catches msgspec's catches ours
    return {".".join(map(str, loc)): message for loc, message in caught.value.problems}


def test_valid_data_is_converted_laxly_and_hooks_run():
    value = validate(Outer, {"count": "3", "inner": {"size": "5x", "name": "OK"}, "many": {"k": {"name": "K"}}})
    assert value == Outer(count=3, inner=Inner(size=5, name="OK"), many={"k": Inner(name="K")})


def test_every_problem_is_reported_with_its_path_in_msgspecs_words():
    found = problems(
        {
            "count": -1,
            "inner": {"size": "0x", "name": "low", "extra": 1},
            "many": {"first": {"name": "A"}, "second": {"size": "many"}},
            "items": [1, 10, "x", 11],
            "colour": "red",
        }
    )
    assert found == {
        "count": "Expected `int` >= 0",
        "inner.size": "Expected `int` >= 1",
        "inner.name": "expected capitals",
        "inner.extra": "Object contains unknown field; expected one of size, name",
        "many.second.size": "invalid literal for int() with base 10: 'man'",
        "many.second.name": "Object missing required field",
        "items.1": "Expected `int` <= 9",
        "items.2": "Expected `int`, got `str`",
        "items.3": "Expected `int` <= 9",
        "colour": "Object contains unknown field; expected one of count, mode, inner, many, items, low, high",
    }


def test_a_check_across_fields_runs_once_the_fields_are_valid():
    assert problems({"low": 5, "high": 2}) == {"": "low is above high"}
    assert problems({"low": 5, "high": "x"}) == {"high": "Expected `int`, got `str`"}


def test_a_choice_names_what_is_expected_and_never_quotes_the_input():
    assert problems({"mode": "hunter2-T0KEN"}) == {"mode": "Expected one of 'a', 'b'"}
    with pytest.raises(ValidationError) as caught:
        validate(JobsSettings, {"log_level": "hunter2-T0KEN", "coordination": {"url": "redis://127.0.0.1/0"}})
    assert "T0KEN" not in str(caught.value)
    assert [loc for loc, _ in caught.value.problems] == [("log_level",), ("coordination", "group")]


def test_a_wrong_shape_is_one_problem_at_its_path():
    assert problems({"inner": [1, 2], "many": "x"}) == {
        "inner": "Expected `object`, got `array`",
        "many": "Expected `object`, got `str`",
    }
    with pytest.raises(ValidationError) as caught:
        validate(Outer, [])
    assert caught.value.problems == [((), "Expected `object`, got `array`")]


class Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    low: int = 3
    high: int = 1

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low is above high")


def test_nothing_given_is_the_defaults_and_their_problems_are_still_reported():
    # {} (a job's options left out) takes a short way; it must say what the walk says.
    assert validate(Outer, {}) == Outer()
    with pytest.raises(ValidationError) as caught:
        validate(Inner, {})
    assert caught.value.problems == [(("name",), "Object missing required field")]
    with pytest.raises(ValidationError) as caught:
        validate(Defaults, {})
    assert caught.value.problems == [((), "low is above high")]
    assert validate(dict[str, int], {}) == {}  # not a Struct: the walk as before
