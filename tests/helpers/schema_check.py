"""Validate monitoring API responses against the published OpenAPI 3.1 document.

OpenAPI 3.1 schemas are JSON Schema Draft 2020-12, so validation is
``jsonschema``'s ``Draft202012Validator``. The whole document is registered as
one resource (``DOC_URI``); a response schema is reached by a JSON pointer into
it, so the ``#/components/schemas/...`` references inside resolve within the
document.

Two deliberate tightenings over plain JSON Schema, so that a passing check
means the document describes the response completely and precisely:

* Closed objects. The published document leaves ``additionalProperties``
  unset (an API description should stay open to additions), but a response
  field the document does not describe must fail the tests, or the document
  would drift from the code. ``closed(doc)`` returns a copy in which every
  object schema without ``additionalProperties`` has it set to false.
* ``integer`` means a JSON integer: ``1.0`` is not one (JSON Schema accepts
  it, typed clients generated from the document would not).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, validators  # type: ignore[import-untyped]  # no stubs
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:tproxy:monitoring:openapi"


def _is_integer(_checker: object, value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _is_object_schema(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def closed(node: Any) -> Any:
    """A deep copy of ``node`` with every object schema lacking ``additionalProperties`` closed."""
    if isinstance(node, list):
        return [closed(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: closed(v) for k, v in node.items()}
    if _is_object_schema(node) and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string anywhere in ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


class ResponseChecker:
    """Validates response bodies against one OpenAPI document (closed objects)."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = closed(doc)
        resource: Resource[Any] = DRAFT202012.create_resource(self.doc)
        self.registry: Registry[Any] = Registry().with_resource(uri=DOC_URI, resource=resource)

    def resolve(self, ref: str) -> Any:
        """The schema a document-local ``$ref`` points at; raises when it dangles."""
        return self.registry.resolver(DOC_URI).lookup(ref).contents

    def errors(self, template: str, status: int, body: Any) -> list[str]:
        """Every error of ``body`` as the JSON response ``status`` of GET ``template``."""
        where = _pointer("paths", template, "get", "responses", str(status), "content", "application/json", "schema")
        v = _StrictValidator({"$ref": DOC_URI + "#" + where}, registry=self.registry)
        return [f"{e.json_path}: {e.message}" for e in v.iter_errors(body)]

    def check(self, template: str, status: int, body: Any) -> None:
        """Assert that ``body`` is a valid response ``status`` of GET ``template``."""
        errs = self.errors(template, status, body)
        assert not errs, f"{template} {status}: " + "\n".join(errs[:10])
