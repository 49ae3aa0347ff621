"""A small JSON Schema validator for the subset the OpenAPI document uses.

jsonschema is not a dependency of this project, and the document only uses
``$ref`` (local), ``anyOf``, ``type`` (a name or a list of names), ``enum``,
``required``, ``properties``, ``additionalProperties`` (bool or schema),
``items`` and ``minimum``. Anything else raises, so the document cannot
quietly start using a keyword this checker ignores.

``strict=True`` treats an object schema without ``additionalProperties`` as
closed: a response field the document does not describe is an error. That is
how the tests keep the published document complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_KNOWN = frozenset(
    {
        "$ref",
        "anyOf",
        "type",
        "enum",
        "required",
        "properties",
        "additionalProperties",
        "items",
        "minimum",
        "description",
        "default",
    }
)


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unsupported type {name!r}")


def resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref supported: {ref}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node  # type: ignore[no-any-return]


def validate(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], *, strict: bool = True, path: str = "$"
) -> list[str]:
    """All errors of ``value`` against ``schema`` (empty list when valid)."""
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"{path}: schema uses unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        return validate(value, resolve(schema["$ref"], root), root, strict=strict, path=path)
    if "anyOf" in schema:
        branches = [validate(value, s, root, strict=strict, path=path) for s in schema["anyOf"]]
        if any(not b for b in branches):
            return []
        return [f"{path}: matches no anyOf branch: " + " | ".join("; ".join(b) for b in branches)]
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, t) for t in types):
            return [f"{path}: expected {'/'.join(types)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and _type_ok(value, "number") and value < schema["minimum"]:
        errors.append(f"{path}: {value!r} < minimum {schema['minimum']}")
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required property {key!r}")
        extra = schema.get("additionalProperties", not strict)
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], root, strict=strict, path=f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: property {key!r} is not described by the schema")
            elif isinstance(extra, Mapping):
                errors += validate(item, extra, root, strict=strict, path=f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], root, strict=strict, path=f"{path}[{i}]")
    return errors


def all_refs(node: Any) -> list[str]:
    """Every ``$ref`` string anywhere in ``node``."""
    out: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.append(v)
            else:
                out += all_refs(v)
    elif isinstance(node, list):
        for v in node:
            out += all_refs(v)
    return out
