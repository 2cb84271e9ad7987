"""Did a structured output parse and match its JSON schema?

OpenAI's structured outputs use a subset of JSON Schema (type, properties, required,
additionalProperties, items, enum, const, anyOf, $ref into $defs). This checks exactly
that subset, so the core package needs no JSON Schema library; keywords outside it are
ignored, never reported as errors. Runs only for requests that carry a ``json_schema``
response format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def request_schema(response_format: Any) -> Mapping[str, Any] | None:
    """The JSON schema of a chat ``response_format`` or a Responses ``text.format``, if any."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    wrapper = response_format.get("json_schema", response_format)  # chat nests it, Responses does not
    schema = wrapper.get("schema") if isinstance(wrapper, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def _type_ok(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    expected = _TYPES.get(kind)
    return True if expected is None else isinstance(value, expected)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def first_error(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str = "$") -> str | None:
    """The first place where ``value`` breaks ``schema``, as ``"$.a[0].b: reason"``; None if none."""
    schema = _resolve(schema, root)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        errors = [first_error(value, option, root, path) for option in any_of if isinstance(option, Mapping)]
        if errors and all(errors):
            return errors[0]
    kind = schema.get("type")
    if isinstance(kind, str) and not _type_ok(value, kind):
        return f"{path}: expected {kind}, got {type(value).__name__}"
    if isinstance(kind, list) and not any(_type_ok(value, k) for k in kind if isinstance(k, str)):
        return f"{path}: expected {' or '.join(map(str, kind))}, got {type(value).__name__}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {schema['enum']!r}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: expected {schema['const']!r}"
    if isinstance(value, dict):
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        for name in schema.get("required") or ():
            if name not in value:
                return f"{path}: missing required property {name!r}"
        if schema.get("additionalProperties") is False:
            for name in value:
                if name not in properties:
                    return f"{path}: unexpected property {name!r}"
        for name, sub in properties.items():
            if name in value and isinstance(sub, Mapping):
                error = first_error(value[name], sub, root, f"{path}.{name}")
                if error:
                    return error
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                error = first_error(item, items, root, f"{path}[{index}]")
                if error:
                    return error
    return None


def check_output(text: str | None, schema: Mapping[str, Any] | None) -> tuple[bool, str | None] | None:
    """(valid, first error) for a JSON text against ``schema``; None when there is no text to check."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return False, f"output is not JSON: {exc}"
    if schema is None:
        return True, None
    error = first_error(value, schema, schema)
    return error is None, error
