"""A small checker of real responses against the OpenAPI schema: types, required fields,
nullable, enums, oneOf, allOf, arrays, $ref, additionalProperties, and a response's status
and documented headers. Enough to catch a response that drifted from the documented
contract; not a full JSON Schema implementation.

`strict` also treats every object schema that lists its properties as closed (unless it says
`additionalProperties`), so a field the code returns but the schema doesn't document is caught."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

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
    """Follow `$ref`s: `#/components/schemas/Name`, `#/components/headers/Name`, ..."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def errors(spec: Schema, node: Schema, value: Any, where: str = "$", strict: bool = False) -> list[str]:
    """Every way `value` breaks `node`; empty when it conforms."""
    node = resolve(spec, node)
    if value is None:
        return [] if node.get("nullable") else [f"{where}: null where it may not be"]
    if "oneOf" in node:
        matching = [option for option in node["oneOf"] if not errors(spec, option, value, where, strict)]
        return [] if len(matching) == 1 else [f"{where}: matches {len(matching)} of oneOf, not exactly 1"]
    if "allOf" in node:
        return _all_of_errors(spec, node["allOf"], value, where, strict)
    kind = node.get("type")
    if kind is not None:
        wanted = _TYPES[kind]
        if not isinstance(value, wanted) or (kind in ("integer", "number") and isinstance(value, bool)):
            return [f"{where}: {type(value).__name__} where {kind} is expected"]
    found: list[str] = []
    if "enum" in node and value not in node["enum"]:
        found.append(f"{where}: {value!r} not one of {node['enum']}")
    if isinstance(value, str):
        found.extend(_string_errors(node, value, where))
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            found.extend(errors(spec, node["items"], item, f"{where}[{index}]", strict))
    if isinstance(value, dict):
        found.extend(_object_errors(spec, node, value, where, strict))
    return found


def _string_errors(node: Schema, value: str, where: str) -> list[str]:
    found = []
    if "pattern" in node and not re.search(node["pattern"], value):
        found.append(f"{where}: {value!r} does not match {node['pattern']}")
    if node.get("format") == "date-time" and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value):
        found.append(f"{where}: {value!r} is not an ISO-8601 UTC time with milliseconds")
    if node.get("format") == "date" and not re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        found.append(f"{where}: {value!r} is not a YYYY-MM-DD day")
    return found


def _object_errors(spec: Schema, node: Schema, value: dict[str, Any], where: str, strict: bool) -> list[str]:
    found = []
    if "maxProperties" in node and len(value) > node["maxProperties"]:
        found.append(f"{where}: more than {node['maxProperties']} properties")
    for name in node.get("required", []):
        if name not in value:
            found.append(f"{where}: missing required {name!r}")
    properties = node.get("properties", {})
    for name, child in properties.items():
        if name in value:
            found.extend(errors(spec, child, value[name], f"{where}.{name}", strict))
    extra = node.get("additionalProperties")
    others = [name for name in value if name not in properties]
    if isinstance(extra, dict):
        for name in others:
            found.extend(errors(spec, extra, value[name], f"{where}.{name}", strict))
    elif extra is False or (strict and extra is None and "properties" in node):
        found.extend(f"{where}: {name!r} is not documented" for name in others)
    return found


def _all_of_errors(spec: Schema, parts: list[Schema], value: Any, where: str, strict: bool) -> list[str]:
    if len(parts) == 1 or not strict or not isinstance(value, dict):
        return [e for part in parts for e in errors(spec, part, value, where, strict)]
    # Strictly, a field is documented when any part documents it.
    found = [e for part in parts for e in errors(spec, part, value, where, False)]
    known = {name for part in parts for name in resolve(spec, part).get("properties", {})}
    return found + [f"{where}: {name!r} is not documented" for name in value if name not in known]


def operation(spec: Schema, path: str, method: str = "get") -> Schema:
    """The documented operation of a path template."""
    return spec["paths"][path][method.lower()]


def response_schema(spec: Schema, path: str, method: str = "get", status: int = 200) -> Schema:
    """The schema documented for `path` (a template such as /v1/human/{periodic}/{id})."""
    response = operation(spec, path, method)["responses"][str(status)]
    return response["content"]["application/json"]["schema"]


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


def check(spec: Schema, concrete: str, body: Any, method: str = "get", status: int = 200, strict: bool = False) -> None:
    found = errors(spec, response_schema(spec, template_of(spec, concrete), method, status), body, strict=strict)
    assert not found, f"{method.upper()} {concrete} breaks the schema: " + "; ".join(found[:10])


class HttpResponse(Protocol):
    """What a Django test response (or a requests response, via its attributes) offers."""

    status_code: int
    content: bytes

    @property
    def headers(self) -> Mapping[str, str]: ...


def header_errors(spec: Schema, documented: Schema, headers: Mapping[str, str], strict: bool = False) -> list[str]:
    """Every way `headers` break the headers documented for one response. `strict`: a header
    the schema describes somewhere (components/headers) must not appear where undocumented."""
    found = []
    present = {name.lower(): value for name, value in headers.items()}
    for name, node in documented.items():
        header = resolve(spec, node)
        value = present.get(name.lower())
        if value is None:
            if header.get("required"):
                found.append(f"header {name} is missing")
            continue
        schema = resolve(spec, header["schema"])
        parsed: Any = value
        if schema.get("type") == "integer":
            if not re.fullmatch(r"\d+", value):
                found.append(f"header {name}: {value!r} is not an integer")
                continue
            parsed = int(value)
        found.extend(errors(spec, schema, parsed, f"header {name}"))
    if strict:
        known = {name.lower() for name in spec.get("components", {}).get("headers", {})}
        listed = {name.lower() for name in documented}
        found.extend(f"header {name} is not documented here" for name in present if name in known - listed)
    return found


def check_response(
    spec: Schema, concrete: str, response: HttpResponse, method: str = "get", strict: bool = True
) -> Any:
    """Check a whole response: its status is documented for the path and method, its body
    matches that status's schema (or is empty when none is documented), and its headers are
    the documented ones. Returns the parsed body (None when empty)."""
    template = template_of(spec, concrete)
    responses = operation(spec, template, method)["responses"]
    status = str(response.status_code)
    where = f"{method.upper()} {concrete} -> {status}"
    assert status in responses, f"{where}: status not documented (documented: {sorted(responses)})"
    documented = responses[status]
    body = json.loads(response.content) if response.content else None
    if "content" in documented:
        schema = documented["content"]["application/json"]["schema"]
        assert response.headers.get("Content-Type", "").startswith("application/json"), where
        found = errors(spec, schema, body, strict=strict)
    else:
        found = [] if body is None else ["a body where none is documented"]
    found += header_errors(spec, documented.get("headers", {}), response.headers, strict)
    assert not found, f"{where} breaks the schema: " + "; ".join(found[:10])
    return body
