"""The OpenAPI 3 description of the public contract: token exchange (§2), the Data API (§6),
the Application API (§7). Built from the same type lists the URLs are built from, so a new
measurement or period type appears here without more work."""

from __future__ import annotations

from functools import cache
from typing import Any

from .records import DEFAULT_LIMIT, MAX_LIMIT, MEASUREMENTS, PERIODIC

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    return {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}, **extra}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time", "example": "2026-03-01T07:30:00.000Z"}
DAY: Schema = {"type": "string", "format": "date", "example": "2026-03-01"}
TZ: Schema = {"type": "string", "pattern": "^[+-][0-9]{2}:[0-9]{2}$", "example": "-05:00"}


def nullable(schema: Schema) -> Schema:
    if "$ref" in schema:  # OpenAPI 3.0 ignores the siblings of a $ref
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


RECORD_BASE = {"id": STR, "humanId": STR, "source": STR, "sourceData": {"type": "object"}, "createdAt": TIME}
RECORD_END = {"updatedAt": TIME}
PERIOD = {"startTime": TIME, "endTime": nullable(TIME), "tzOffset": TZ}

COMPONENTS: dict[str, Schema] = {
    "Error": obj(
        {"statusCode": INT, "error": STR, "message": STR, "requestId": STR},
        {"validation": obj({"keys": array_of(STR)})},
    ),
    "Reading": obj({**RECORD_BASE, "timestamp": TIME, "tzOffset": TZ, "value": NUM, "unit": STR, **RECORD_END}),
    "BloodPressureReading": obj(
        {**RECORD_BASE, "timestamp": TIME, "tzOffset": TZ, "systolic": NUM, "diastolic": NUM, "unit": STR},
        {"value": NUM, **RECORD_END},
    ),
    "Activity": obj(
        {**RECORD_BASE, **PERIOD, **RECORD_END},
        {"type": STR, "duration": NUM, "distance": NUM, "steps": NUM, "calories": NUM},
    ),
    "Sleep": obj(
        {**RECORD_BASE, **PERIOD, **RECORD_END},
        {
            "day": DAY,
            "mainSleep": BOOL,
            "timeAsleep": NUM,
            "timeAwake": NUM,
            "timeInBed": NUM,
            "efficiency": NUM,
            "numberOfWakeups": NUM,
        },
    ),
    "Location": obj({**RECORD_BASE, **PERIOD, **RECORD_END}, {"name": STR, "latitude": NUM, "longitude": NUM}),
    "Meal": obj({**RECORD_BASE, **PERIOD, **RECORD_END}, {"name": STR, "calories": NUM}),
    "Shift": obj(
        {**RECORD_BASE, **PERIOD, **RECORD_END},
        {
            "title": nullable(STR),
            "position": nullable(STR),
            "location": nullable(STR),
            "published": BOOL,
            "employeeId": nullable(STR),
        },
    ),
    "Timeclock": obj(
        {**RECORD_BASE, **PERIOD, **RECORD_END},
        {"duration": nullable(NUM), "position": nullable(STR), "location": nullable(STR), "shiftId": nullable(STR)},
    ),
    "ActivitySummary": obj(
        {
            "id": STR,
            "humanId": STR,
            "date": DAY,
            "steps": INT,
            "distance": NUM,
            "calories": NUM,
            "duration": INT,
            "count": INT,
            "createdAt": nullable(TIME),
            "updatedAt": nullable(TIME),
        }
    ),
    "SleepSummary": obj(
        {
            "id": STR,
            "humanId": STR,
            "date": DAY,
            "timeAsleep": INT,
            "timeAwake": INT,
            "timeInBed": INT,
            "efficiency": nullable(INT),
            "numberOfWakeups": INT,
            "count": INT,
            "createdAt": nullable(TIME),
            "updatedAt": nullable(TIME),
        }
    ),
    "HeartRateSummary": obj(
        {
            "id": STR,
            "humanId": STR,
            "date": DAY,
            "min": INT,
            "max": INT,
            "avg": NUM,
            "restingHeartRate": INT,
            "unit": STR,
            "count": INT,
            "createdAt": nullable(TIME),
            "updatedAt": nullable(TIME),
        }
    ),
    "Profile": obj({"humanId": STR, "email": STR, "createdAt": TIME, "updatedAt": TIME, "defaultTimeZone": STR}),
    "HumanSummary": obj(
        {
            "humanId": STR,
            "email": STR,
            **{
                "".join(p if i == 0 else p.title() for i, p in enumerate(m.split("_"))): nullable(
                    ref("BloodPressureReading" if m == "blood_pressure" else "Reading")
                )
                for m in MEASUREMENTS
            },
            "activitySummary": nullable(ref("ActivitySummary")),
            "sleepSummary": nullable(ref("SleepSummary")),
        },
        {"updatedAt": TIME},
    ),
    "Source": obj(
        {
            "id": STR,
            "source": STR,
            "sourceName": STR,
            "connectedSince": TIME,
            "supportedDataTypes": array_of(STR),
            "historySync": obj({"status": STR, "oldestDate": nullable(DAY)}),
            "syncStatus": obj({"status": STR, "details": nullable(STR), "synchedAt": nullable(TIME)}),
        }
    ),
    "TokenRequest": obj(
        {
            "client_id": STR,
            "client_secret": STR,
            "client_user_id": STR,
            "type": {**STR, "enum": ["session", "id", "access", "refresh"]},
        },
        {"client_user_email": STR, "refresh_token": STR},
    ),
    "TokenResponse": {
        "oneOf": [
            obj({"session_token": STR, "expires_in": INT, "human_id": STR}),
            obj({"id_token": STR, "id_token_expires_in": INT, "human_id": STR}),
            obj(
                {
                    "access_token": STR,
                    "expires_in": INT,
                    "token_type": {**STR, "enum": ["Bearer"]},
                    "refresh_token": STR,
                    "human_id": STR,
                }
            ),
        ]
    },
    "AppUser": obj({"humanId": STR, "externalId": STR, "appId": STR, "createdAt": TIME, "updatedAt": TIME}),
    "NewAppUser": obj({"externalId": STR}),
    "AuditEntry": obj(
        {"at": TIME, "actor": STR, "action": STR},
        {"humanId": nullable(STR), "ip": nullable(STR), "details": {"type": "object"}},
        additionalProperties=True,
    ),
}


PERIOD_SCHEMA = {
    "activities": "Activity",
    "sleeps": "Sleep",
    "locations": "Location",
    "meals": "Meal",
    "shifts": "Shift",
    "timeclocks": "Timeclock",
}
SUMMARY_SCHEMA = {"activities": "ActivitySummary", "sleeps": "SleepSummary", "heart_rate": "HeartRateSummary"}
# The Application API's batch names (§7) and the stored type each one lists.
BATCH_TYPES = {**{kind: kind for kind in PERIOD_SCHEMA}, **{f"{m}s": m for m in MEASUREMENTS}}


def _param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


LIST_PARAMS = [
    _param("limit", "query", {**INT, "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, "Page size."),
    _param("offset", "query", {**INT, "minimum": 0, "default": 0}, "Items to skip."),
    _param("start_date", "query", DAY, "First local day (with end_date)."),
    _param("end_date", "query", DAY, "Last local day (with start_date)."),
    *[
        _param(name, "query", STR, f"{name.replace('_', ' ').capitalize()}: YYYYMMDDTHHmmssZ or ISO-8601.")
        for name in ("created_since", "updated_since", "created_before", "updated_before")
    ],
    _param("source", "query", STR, "Only this source (slug)."),
]
LIST_HEADERS = {
    "X-Total-Count": {"schema": INT, "description": "Items matching the query."},
    "Link": {"schema": STR, "description": "first, prev, next, last: the same query at another offset."},
}
ERRORS = {
    str(code): {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
    for code, text in ((400, "Bad input"), (401, "Missing or invalid credentials"), (404, "Not found"))
}


def _json(schema: Schema, description: str = "OK", headers: Schema | None = None) -> Schema:
    body: Schema = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        body["headers"] = headers
    return body


def _get(
    summary: str, schema: Schema, *, tag: str, params: list[Schema] | None = None, is_list: bool = False
) -> Schema:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "parameters": [*(params or []), *(LIST_PARAMS if is_list else [])],
            "responses": {"200": _json(schema, headers=LIST_HEADERS if is_list else None), **ERRORS},
        }
    }


DAY_PARAM = _param("day", "path", DAY, "A local day, YYYY-MM-DD.", required=True)
ID_PARAM = _param("id", "path", STR, "The record's id.", required=True)
REF_PARAM = _param("ref", "path", STR, "A summary id, or a local day YYYY-MM-DD.", required=True)


def _reading_ref(kind: str) -> Schema:
    return ref("BloodPressureReading" if kind == "blood_pressure" else "Reading")


def _data_api_paths() -> dict[str, Schema]:
    tag = "Data API"
    paths: dict[str, Schema] = {
        "/v1/human/": _get("Human summary", ref("HumanSummary"), tag=tag),
        "/v1/human/profile": _get("Profile", ref("Profile"), tag=tag),
        "/v1/human/sources": _get("Connected sources and their sync", array_of(ref("Source")), tag=tag),
    }
    for m in MEASUREMENTS:
        item = _reading_ref(m)
        latest = {"oneOf": [item, {"type": "object", "maxProperties": 0}]}
        base = f"/v1/human/{m}"
        paths[base] = _get(f"Latest {m} reading ({{}} if none)", latest, tag=tag)
        paths[f"{base}/readings"] = _get(f"{m} readings", array_of(item), tag=tag, is_list=True)
        paths[f"{base}/readings/{{id}}"] = _get(f"One {m} reading", item, tag=tag, params=[ID_PARAM])
        paths[f"{base}/readings/daily/{{day}}"] = _get(
            f"{m} readings of one local day", array_of(item), tag=tag, params=[DAY_PARAM], is_list=True
        )
    for route, kind in PERIODIC.items():
        item = ref(PERIOD_SCHEMA[kind])
        base = f"/v1/human/{route}"
        paths[base] = _get(f"{route}", array_of(item), tag=tag, is_list=True)
        paths[f"{base}/{{id}}"] = _get(f"One of {route}", item, tag=tag, params=[ID_PARAM])
        paths[f"{base}/daily/{{day}}"] = _get(
            f"{route} of one local day", array_of(item), tag=tag, params=[DAY_PARAM], is_list=True
        )
    for kind, name in SUMMARY_SCHEMA.items():
        base = f"/v1/human/{kind}"
        paths[f"{base}/summaries"] = _get(f"Daily {kind} summaries", array_of(ref(name)), tag=tag, is_list=True)
        paths[f"{base}/summaries/{{ref}}"] = _get(f"One daily {kind} summary", ref(name), tag=tag, params=[REF_PARAM])
        paths[f"{base}/summary/{{day}}"] = _get(f"The {kind} summary of a day", ref(name), tag=tag, params=[DAY_PARAM])
    return paths


def _token_paths() -> dict[str, Schema]:
    body = {"content": {"application/json": {"schema": ref("TokenRequest")}}, "required": True}
    return {
        "/v1/connect/token": {
            "post": {
                "summary": "Exchange client credentials for a session, id, access or refresh token",
                "tags": ["Token exchange"],
                "security": [],
                "requestBody": body,
                "responses": {"200": _json(ref("TokenResponse")), **ERRORS},
            }
        }
    }


def _app_paths() -> dict[str, Schema]:
    tag = "Application API"
    base = "/v1/apps/{client_id}"
    client = _param("client_id", "path", STR, "The Application's client id.", required=True)
    human = _param("humanId", "path", STR, "The Human's id.", required=True)
    since = _param("updated_since", "query", STR, "Only records changed after: YYYYMMDDTHHmmssZ or ISO-8601.")
    security: list[Schema] = [{"appKey": []}]

    def op(summary: str, responses: Schema, params: list[Schema]) -> Schema:
        return {"summary": summary, "tags": [tag], "security": security, "parameters": params, "responses": responses}

    paths: dict[str, Schema] = {
        f"{base}/users": {
            "get": op("Every Human of the Application", {"200": _json(array_of(ref("AppUser"))), **ERRORS}, [client]),
            "post": {
                **op("Create a Human", {"201": _json(ref("AppUser"), "Created"), **ERRORS}, [client]),
                "requestBody": {"content": {"application/json": {"schema": ref("NewAppUser")}}, "required": True},
            },
        },
        f"{base}/users/{{humanId}}": {
            "get": op("One Human", {"200": _json(ref("AppUser")), **ERRORS}, [client, human]),
            "delete": op(
                "Delete a Human with every record, token and connection",
                {"204": {"description": "Deleted"}, **ERRORS},
                [client, human],
            ),
        },
        f"{base}/users/{{humanId}}/sources": {
            "get": op(
                "Sync status and history of each connection", {"200": _json(array_of(ref("Source")))}, [client, human]
            )
        },
        f"{base}/users/{{humanId}}/sync": {
            "post": op("Sync every connection now", {"202": {"description": "Accepted"}, **ERRORS}, [client, human])
        },
        f"{base}/audit": {
            "get": op("The audit log, newest first", {"200": _json(array_of(ref("AuditEntry"))), **ERRORS}, [client])
        },
    }
    for name, kind in sorted(BATCH_TYPES.items()):
        item = ref(PERIOD_SCHEMA[kind]) if kind in PERIOD_SCHEMA else _reading_ref(kind)
        paths[f"{base}/users/{name}"] = {
            "get": op(f"{name} of every Human, each with its humanId", {"200": _json(array_of(item))}, [client, since])
        }
    for kind in ("activities", "sleeps"):
        paths[f"{base}/users/{kind}/summaries"] = {
            "get": op(
                f"Daily {kind} summaries of every Human",
                {"200": _json(array_of(ref(SUMMARY_SCHEMA[kind])))},
                [client, since],
            )
        }
    return paths


@cache
def schema() -> Schema:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Human API compatible server",
            "version": "1",
            "description": "Token exchange, the per-user Data API and the Application API. Errors share one "
            "envelope; every response carries X-Request-Id.",
        },
        "paths": {**_token_paths(), **_data_api_paths(), **_app_paths()},
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "accessToken": {"type": "http", "scheme": "bearer", "description": "Or ?access_token=..."},
                "appKey": {"type": "http", "scheme": "basic", "description": "The App Key as username, no password."},
            },
        },
        "security": [{"accessToken": []}],
    }


def describe(node: Schema) -> str:
    """A short human reading of a schema: `array of Activity`, `string (date-time)`."""
    if "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in node:
        return " or ".join(describe(option) for option in node["oneOf"])
    if "allOf" in node:
        return " and ".join(describe(part) for part in node["allOf"]) + (" or null" if node.get("nullable") else "")
    if node.get("type") == "array":
        return f"array of {describe(node['items'])}"
    if node.get("type") == "object" and node.get("maxProperties") == 0:
        return "{}"
    text = str(node.get("type", "object"))
    if "format" in node:
        text += f" ({node['format']})"
    if "enum" in node:
        text += " one of " + ", ".join(node["enum"])
    return text + (" or null" if node.get("nullable") else "")


def docs_context() -> dict[str, Any]:
    """What the /docs page shows, taken from the schema."""
    spec = schema()
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            groups.setdefault(op["tags"][0], []).append(
                {
                    "method": method,
                    "path": path,
                    "summary": op["summary"],
                    "params": [{**p, "type": describe(p["schema"])} for p in op.get("parameters", [])],
                    "responses": [
                        {
                            "code": code,
                            "description": r["description"],
                            "body": describe(r["content"]["application/json"]["schema"]) if "content" in r else "",
                        }
                        for code, r in op["responses"].items()
                    ],
                }
            )
    components = []
    for name, node in spec["components"]["schemas"].items():
        required = set(node.get("required", []))
        fields = [
            {"name": k, "type": describe(v), "required": k in required} for k, v in node.get("properties", {}).items()
        ]
        components.append({"name": name, "fields": fields, "text": describe(node)})
    return {
        "title": spec["info"]["title"],
        "description": spec["info"]["description"],
        "version": spec["openapi"],
        "groups": [
            {"name": name, "slug": name.lower().replace(" ", "-"), "operations": ops} for name, ops in groups.items()
        ],
        "components": components,
    }
