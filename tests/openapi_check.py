"""A small checker of real responses against the OpenAPI schema: types, required fields,
nullable, enums, oneOf, arrays and $ref. Enough to catch a response that drifted from the
documented contract; not a full JSON Schema implementation."""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def resolve(spec: Schema, node: Schema) -> Schema:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = spec["components"]["schemas"][name]
    return node


def errors(spec: Schema, node: Schema, value: Any, where: str = "$") -> list[str]:
    """Every way `value` breaks `node`; empty when it conforms."""
    node = resolve(spec, node)
    if value is None:
        return [] if node.get("nullable") else [f"{where}: null where it may not be"]
    if "oneOf" in node:
        matching = [option for option in node["oneOf"] if not errors(spec, option, value, where)]
        return [] if len(matching) == 1 else [f"{where}: matches {len(matching)} of oneOf, not exactly 1"]
    if "allOf" in node:
        return [e for part in node["allOf"] for e in errors(spec, part, value, where)]
    kind = node.get("type")
    if kind is not None:
        wanted = _TYPES[kind]
        if not isinstance(value, wanted) or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{where}: {type(value).__name__} where {kind} is expected"]
    found: list[str] = []
    if "enum" in node and value not in node["enum"]:
        found.append(f"{where}: {value!r} not one of {node['enum']}")
    if isinstance(value, str) and "pattern" in node and not re.search(node["pattern"], value):
        found.append(f"{where}: {value!r} does not match {node['pattern']}")
    if (
        isinstance(value, str)
        and node.get("format") == "date-time"
        and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value)
    ):
        found.append(f"{where}: {value!r} is not an ISO-8601 UTC time with milliseconds")
    if isinstance(value, str) and node.get("format") == "date" and not re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        found.append(f"{where}: {value!r} is not a YYYY-MM-DD day")
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            found.extend(errors(spec, node["items"], item, f"{where}[{index}]"))
    if isinstance(value, dict):
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            found.append(f"{where}: more than {node['maxProperties']} properties")
        for name in node.get("required", []):
            if name not in value:
                found.append(f"{where}: missing required {name!r}")
        for name, child in node.get("properties", {}).items():
            if name in value:
                found.extend(errors(spec, child, value[name], f"{where}.{name}"))
    return found


def response_schema(spec: Schema, path: str, method: str = "get", status: int = 200) -> Schema:
    """The schema documented for `path` (a template such as /v1/human/{periodic}/{id})."""
    operation = spec["paths"][path][method]
    return operation["responses"][str(status)]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def template_of(spec: Schema, concrete: str) -> str:
    """The documented path template a concrete path matches (fixed segments win)."""
    candidates = []
    for template in spec["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, concrete):
            candidates.append((template.count("{"), template))
    if not candidates:
        raise AssertionError(f"{concrete} is not documented")
    return min(candidates)[1]


def check(spec: Schema, concrete: str, body: Any, method: str = "get", status: int = 200) -> None:
    found = errors(spec, response_schema(spec, template_of(spec, concrete), method, status), body)
    assert not found, f"{method.upper()} {concrete} breaks the schema: " + "; ".join(found[:10])
