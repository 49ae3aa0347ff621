"""The tiny JSON Schema checker used by the API tests must itself reject bad data."""

from __future__ import annotations

from typing import Any

import pytest

from tests.monitoring.schema_check import all_refs, validate

ROOT: dict[str, Any] = {
    "components": {
        "schemas": {
            "Item": {
                "type": "object",
                "required": ["id", "name"],
                "properties": {
                    "id": {"type": "integer", "minimum": 0},
                    "name": {"type": ["string", "null"]},
                    "kind": {"type": "string", "enum": ["a", "b"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
            "MaybeItem": {"anyOf": [{"$ref": "#/components/schemas/Item"}, {"type": "null"}]},
        }
    }
}
ITEM = {"$ref": "#/components/schemas/Item"}


def test_accepts_valid() -> None:
    ok = {"id": 1, "name": None, "kind": "a", "tags": ["x"], "counts": {"k": 2}}
    assert validate(ok, ITEM, ROOT) == []
    assert validate(None, {"$ref": "#/components/schemas/MaybeItem"}, ROOT) == []


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"name": "x"}, "missing required property 'id'"),
        ({"id": "1", "name": "x"}, "expected integer"),
        ({"id": True, "name": "x"}, "expected integer"),
        ({"id": -1, "name": "x"}, "minimum"),
        ({"id": 1, "name": 3}, "expected string/null"),
        ({"id": 1, "name": "x", "kind": "c"}, "not in"),
        ({"id": 1, "name": "x", "tags": [1]}, "$.tags[0]"),
        ({"id": 1, "name": "x", "counts": {"k": 1.5}}, "$.counts.k"),
        ({"id": 1, "name": "x", "surprise": 1}, "not described"),
        ([], "expected object"),
    ],
)
def test_rejects_invalid(value: Any, fragment: str) -> None:
    errors = validate(value, ITEM, ROOT)
    assert errors, value
    assert any(fragment in e for e in errors), errors


def test_non_strict_allows_undocumented_fields() -> None:
    assert validate({"id": 1, "name": "x", "surprise": 1}, ITEM, ROOT, strict=False) == []


def test_unsupported_keyword_raises() -> None:
    with pytest.raises(ValueError, match="unsupported keywords"):
        validate(1, {"type": "integer", "maximum": 3}, ROOT)


def test_all_refs() -> None:
    assert all_refs(ROOT) == ["#/components/schemas/Item"]
