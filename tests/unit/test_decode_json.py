"""The ingest body decoder: msgspec first for speed, the standard library's json as the
judge. msgspec must never take a text json refuses, nor read one differently; what it
refuses, json decides (and words the error), so every answer stays what it was."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from almhookd.api import common
from almhookd.api.common import ApiError, decode_json


def reference(text: str) -> tuple[str, Any]:
    """What the json-only decoder did: ("ok", value) or ("error", message)."""
    try:
        return "ok", common._decode(text)
    except json.JSONDecodeError as error:
        return "error", f"400 malformed_json the body is not valid JSON: {error}"
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return "error", f"400 malformed_json the body is not usable JSON: {reason}"


def decoded(text: str) -> tuple[str, Any]:
    try:
        return "ok", decode_json(text)
    except ApiError as error:
        return "error", f"{error.status} {error.code} {error.message}"


def same(left: Any, right: Any) -> bool:
    """Equal, with types (True is not 1) and the sign of zero."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return math.copysign(1, left) == math.copysign(1, right) and left == right
    return bool(left == right)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(json_values, st.sampled_from([None, 0, 2]))
def test_valid_json_reads_the_same(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    kind, result = decoded(text)
    assert kind == "ok"
    assert same(result, reference(text)[1])


@settings(max_examples=600)
@given(json_values, st.data())
def test_a_damaged_text_is_taken_or_refused_as_json_does(value: Any, data: st.DataObject) -> None:
    """Characters cut, inserted or replaced anywhere: msgspec takes only what json takes,
    reads it alike, and the refusals keep json's words."""
    text = json.dumps(value)
    position = data.draw(st.integers(0, len(text)))
    damage = data.draw(
        st.sampled_from(
            [
                "",
                ",",
                "]",
                "}",
                '"',
                "\\",
                "\\ud800",
                "NaN",
                "Infinity",
                "-",
                "0",
                ".",
                "e",
                "\x00",
                "\x01",
                "\x0c",
                "\u2028",
                " ",
                "01",
                "1e999",
                "tru",
                "\ufeff",
            ]
        )
    )
    cut = data.draw(st.integers(0, 2))
    damaged = text[:position] + damage + text[position + cut :]
    expected = reference(damaged)
    kind, result = decoded(damaged)
    assert kind == expected[0], damaged
    if kind == "ok":
        assert same(result, expected[1]), damaged
    else:
        assert result == expected[1]


@pytest.mark.parametrize(
    "text",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": "\\ud800"}',
        '{"a": 1e400}',
        "[" * 5000 + "]" * 5000,
        '{"a": 18446744073709551616}',
        '{"a": 1, "a": 2}',
        "\ufeff{}",
        '{"a": -0.0}',
    ],
)
def test_the_edges_of_json(text: str) -> None:
    expected = reference(text)
    kind, result = decoded(text)
    assert kind == expected[0]
    if kind == "ok":
        assert same(result, expected[1])
    else:
        assert result == expected[1]
