"""The OpenAPI 3 description of the public contract: token exchange (§2), the Data API (§6),
the Application API (§7). Built from the same type lists the URLs are built from, so a new
measurement, period or batch type appears here without more work."""

from __future__ import annotations

from functools import cache
from typing import Any

from connect.models import Actor
from sources.models import ConnectionStatus, SyncKind, SyncOutcome
from sources.types import BATCH_TYPES, RECORD_TYPES

from .app_selectors import SUMMARY_SUMS
from .records import COUNT_AHEAD, DEFAULT_LIMIT, MAX_LIMIT, MEASUREMENTS, PERIODIC

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(item: Schema) -> Schema:
    return {"type": "array", "items": item}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    node: Schema = {"type": "object", "properties": {**required, **(optional or {})}, **extra}
    if required:  # OpenAPI 3.0 forbids an empty `required`
        node["required"] = list(required)
    return node


def one_of(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def text(most: int) -> Schema:
    """A request's non-empty string of at most `most` characters."""
    return {"type": "string", "minLength": 1, "maxLength": most}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
OBJECT: Schema = {"type": "object"}
TIME: Schema = {"type": "string", "format": "date-time", "example": "2026-03-01T07:30:00.000Z"}
DAY: Schema = {"type": "string", "format": "date", "example": "2026-03-01"}
TZ: Schema = {"type": "string", "pattern": "^[+-][0-9]{2}:[0-9]{2}$", "example": "-05:00"}
SLUG: Schema = {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$", "example": "demo"}


def nullable(schema: Schema) -> Schema:
    if "$ref" in schema:  # OpenAPI 3.0 ignores the siblings of a $ref
        return {"allOf": [schema], "nullable": True}
    return {**schema, "nullable": True}


RECORD_BASE = {"id": STR, "humanId": STR, "source": STR, "sourceData": OBJECT, "createdAt": TIME}
RECORD_END = {"updatedAt": TIME}
PERIOD = {"startTime": TIME, "endTime": nullable(TIME), "tzOffset": TZ}
# A day's total is null when none of the day's records carries the measure.
SUMMARY_BASE = {
    "id": STR,
    "humanId": STR,
    "date": DAY,
    "source": {**STR, "description": "The source that answered for this day (one source per day, never a sum)."},
}
SUMMARY_END = {"count": INT, "createdAt": nullable(TIME), "updatedAt": nullable(TIME)}

SOURCE_FIELDS: dict[str, Schema] = {
    "id": STR,
    "source": STR,
    "sourceName": STR,
    "connectedSince": TIME,
    "supportedDataTypes": array_of(STR),
    "historySync": obj(
        {"status": one_of("pending", "in_progress", "completed", "failed"), "oldestDate": nullable(DAY)}
    ),
    "syncStatus": obj(
        {
            "status": one_of(
                "pending", "syncing", "ok", "partial", "retrying", "failed", "reauth_required", "disconnected"
            ),
            "details": nullable(STR),
            "synchedAt": nullable(TIME),
            "unreadable": {
                **OBJECT,
                "additionalProperties": INT,
                "description": 'Items of each type the last run could not read, e.g. {"shifts": 1}.',
            },
            "failedTypes": {**array_of(STR), "description": "Types whose fetch failed in the last run."},
        }
    ),
}
CHANGE_COUNTS = obj({}, {"created": INT, "updated": INT, "deleted": INT})
RUN_COUNTS = obj(
    {},
    {
        "read": INT,
        "created": INT,
        "updated": INT,
        "deleted": INT,
        "unreadable": INT,
        "held": {**INT, "description": "Kept although their window came back empty once (deleted if it is again)."},
    },
)

COMPONENTS: dict[str, Schema] = {
    "Error": obj(
        {"statusCode": INT, "error": STR, "message": STR, "requestId": STR},
        {"validation": obj({"keys": array_of(STR)})},
    ),
    "Reading": obj({**RECORD_BASE, "timestamp": TIME, "tzOffset": TZ, "value": NUM, "unit": STR, **RECORD_END}),
    "TemperatureReading": obj(
        {**RECORD_BASE, "timestamp": TIME, "tzOffset": TZ, "unit": STR},
        {
            "value": {
                **nullable(NUM),
                "description": "The measured temperature, °C; null where only a deviation is known.",
            },
            "deviation": {**nullable(NUM), "description": "Difference from the person's own baseline, °C."},
            **RECORD_END,
        },
    ),
    "BloodPressureReading": obj(
        {**RECORD_BASE, "timestamp": TIME, "tzOffset": TZ, "systolic": NUM, "diastolic": NUM, "unit": STR},
        {"value": NUM, **RECORD_END},
    ),
    "Activity": obj(
        {**RECORD_BASE, **PERIOD, **RECORD_END},
        {
            "type": STR,
            "duration": nullable(NUM),
            "distance": {**nullable(NUM), "description": "Metres; null where the source doesn't measure it."},
            "steps": nullable(NUM),
            "calories": {**nullable(NUM), "description": "kcal; null where the source doesn't report it."},
        },
    ),
    "Sleep": obj(
        {**RECORD_BASE, **PERIOD, **RECORD_END},
        {
            "day": DAY,
            "mainSleep": BOOL,
            "timeAsleep": nullable(NUM),
            "timeAwake": nullable(NUM),
            "timeInBed": nullable(NUM),
            "efficiency": nullable(NUM),
            "numberOfWakeups": nullable(NUM),
            "deepSleep": {**nullable(NUM), "description": "Minutes in deep sleep, where the source tells stages."},
            "lightSleep": {**nullable(NUM), "description": "Minutes in light sleep."},
            "remSleep": {**nullable(NUM), "description": "Minutes in REM sleep."},
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
            **SUMMARY_BASE,
            "steps": nullable(INT),
            "distance": {**nullable(NUM), "description": "Metres."},
            "calories": {**nullable(NUM), "description": "kcal; the day's total where the source reports one."},
            "activeCalories": nullable(NUM),
            "duration": {**nullable(INT), "description": "Active seconds."},
            "sedentary": nullable(INT),
            "light": nullable(INT),
            "moderate": nullable(INT),
            "vigorous": nullable(INT),
            **SUMMARY_END,
        }
    ),
    "SleepSummary": obj(
        {
            **SUMMARY_BASE,
            "timeAsleep": nullable(INT),
            "timeAwake": nullable(INT),
            "timeInBed": nullable(INT),
            "efficiency": nullable(INT),
            "numberOfWakeups": nullable(INT),
            "deepSleep": nullable(INT),
            "lightSleep": nullable(INT),
            "remSleep": nullable(INT),
            **SUMMARY_END,
        }
    ),
    "HeartRateSummary": obj(
        {
            **SUMMARY_BASE,
            "min": nullable(INT),
            "max": nullable(INT),
            "avg": nullable(NUM),
            "restingHeartRate": nullable(INT),
            "unit": STR,
            **SUMMARY_END,
        }
    ),
    "Profile": obj({"humanId": STR, "email": STR, "createdAt": TIME, "updatedAt": TIME, "defaultTimeZone": STR}),
    "HumanSummary": obj(
        {
            "humanId": STR,
            "email": STR,
            **{
                "".join(p if i == 0 else p.title() for i, p in enumerate(m.split("_"))): nullable(
                    ref(RECORD_TYPES[m].schema)
                )
                for m in MEASUREMENTS
            },
            "activitySummary": nullable(ref("ActivitySummary")),
            "sleepSummary": nullable(ref("SleepSummary")),
        },
        {"updatedAt": TIME},
    ),
    "Source": obj(SOURCE_FIELDS),
    "TokenRequest": obj(
        {"client_id": text(64), "client_secret": text(200), "type": one_of("session", "id", "access", "refresh")},
        {
            "client_user_id": {
                "oneOf": [text(255), INT],
                "description": "Required unless type=refresh. A whole number is taken as its decimal text.",
            },
            "client_user_email": {**text(320), "format": "email", "description": "Required for type=session."},
            "refresh_token": {**text(200), "description": "Required for type=refresh."},
        },
    ),
    "SessionToken": obj({"session_token": STR, "expires_in": INT, "human_id": STR}),
    "IdToken": obj({"id_token": STR, "id_token_expires_in": INT, "human_id": STR}),
    "AccessToken": obj(
        {"access_token": STR, "expires_in": INT, "token_type": one_of("Bearer"), "refresh_token": STR, "human_id": STR}
    ),
    "TokenResponse": {"oneOf": [ref("SessionToken"), ref("IdToken"), ref("AccessToken")]},
    "LegacyTokensRequest": obj(
        {"humanId": text(64), "clientId": text(64), "sessionToken": text(200), "clientSecret": text(200)}
    ),
    "LegacyTokens": obj({"humanId": STR, "accessToken": STR, "publicToken": STR, "clientId": STR, "clientUserId": STR}),
    "LegacyPublicTokensRequest": obj({"humanId": text(64), "clientId": text(64), "clientSecret": text(200)}),
    "LegacyPublicToken": obj({"humanId": STR, "publicToken": STR}),
    "AppUser": obj({"humanId": STR, "externalId": STR, "appId": STR, "createdAt": TIME, "updatedAt": TIME}),
    "NewAppUser": obj(
        {
            "externalId": {
                "oneOf": [text(255), INT],
                "description": "The app's id for the user; a whole number is taken as its decimal text.",
            }
        }
    ),
    "SyncRun": obj(
        {
            "id": INT,
            "kind": one_of(*SyncKind.values),
            "outcome": one_of(*SyncOutcome.values),
            "startedAt": TIME,
            "finishedAt": nullable(TIME),
            "pages": INT,
            "counts": {**OBJECT, "additionalProperties": RUN_COUNTS, "description": "Per data type."},
            "error": STR,
            "unreadable": {
                **OBJECT,
                "additionalProperties": array_of(STR),
                "description": "Per data type, the first reasons items could not be read.",
            },
            "failures": {**OBJECT, "additionalProperties": STR, "description": "Types that failed, and why."},
        }
    ),
    "Connection": obj(
        {
            **SOURCE_FIELDS,
            "status": one_of(*ConnectionStatus.values),
            "nextSyncAt": nullable(TIME),
            "syncRuns": {**array_of(ref("SyncRun")), "description": "The latest runs, newest first."},
        }
    ),
    "SyncRequest": obj({}, {"source": {**SLUG, "description": "Only this source's connection (slug)."}}),
    "SyncQueued": obj({"status": one_of("queued"), "connections": array_of(obj({"id": STR, "source": STR}))}),
    "AuditEntry": obj(
        {
            "id": INT,
            "at": TIME,
            "actor": one_of(*Actor.values),
            "action": STR,
            "humanId": nullable(STR),
            "ip": nullable(STR),
            "details": OBJECT,
        }
    ),
}

LINK_RELS = "(next|prev|last|first)"
LINK_ONE = f'<[^>]+>; rel="{LINK_RELS}"'
HEADERS: dict[str, Schema] = {
    "X-Request-Id": {"schema": STR, "required": True, "description": "This request's id (also in error bodies)."},
    "X-Total-Count": {
        "schema": INT,
        "required": True,
        "description": "Items matching the query; a lower bound when X-Total-Count-Exact is false.",
    },
    "X-Total-Count-Exact": {
        "schema": {**STR, "enum": ["false"]},
        "required": False,
        "description": "Present when X-Total-Count is a lower bound: a list without a cached total is counted "
        f"no further than {COUNT_AHEAD} items past the page (there is then no `last` link).",
    },
    "Link": {
        "schema": {**STR, "pattern": f"^{LINK_ONE}(, {LINK_ONE})*$"},
        "required": False,
        "description": "first, prev, next, last as they apply: the same query at another offset.",
    },
    "Retry-After": {"schema": INT, "required": True, "description": "Seconds to wait before trying again."},
    "WWW-Authenticate": {"schema": STR, "required": True, "description": "The authentication scheme expected."},
}


PERIOD_SCHEMA = {t.name: t.schema for t in RECORD_TYPES.values() if t.kind == "period"}
SUMMARY_SCHEMA = {t.name: t.summary_schema for t in RECORD_TYPES.values() if t.summary_schema}


def _param(name: str, where: str, schema: Schema, description: str, required: bool = False, **extra: Any) -> Schema:
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description, **extra}


# An empty limit or offset (`?limit=`) is taken as absent: the default.
PAGE_LIMIT: Schema = {**INT, "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
PAGE_PARAMS = [
    _param("limit", "query", PAGE_LIMIT, "Page size (empty: the default).", allowEmptyValue=True),
    _param("offset", "query", {**INT, "minimum": 0, "default": 0}, "Items to skip (empty: 0).", allowEmptyValue=True),
]
LIST_PARAMS = [
    *PAGE_PARAMS,
    _param("start_date", "query", DAY, "First local day (with end_date)."),
    _param("end_date", "query", DAY, "Last local day (with start_date)."),
    *[
        _param(name, "query", STR, f"{name.replace('_', ' ').capitalize()}: YYYYMMDDTHHmmssZ or ISO-8601.")
        for name in ("created_since", "updated_since", "created_before", "updated_before")
    ],
    _param("source", "query", SLUG, "Only this source (slug)."),
]
LIST_HEADERS = ("X-Total-Count", "Link", "X-Total-Count-Exact")


def _headers(*names: str) -> Schema:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in ("X-Request-Id", *names)}


def _response(description: str, schema: Schema | None = None, headers: tuple[str, ...] = ()) -> Schema:
    body: Schema = {"description": description, "headers": _headers(*headers)}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


def _json(schema: Schema, description: str = "OK", headers: tuple[str, ...] = ()) -> Schema:
    return _response(description, schema, headers)


ERROR_TEXT = {
    400: "Bad input; validation.keys names the parameters at fault",
    401: "Missing or invalid credentials",
    404: "Not found",
    409: "Conflict with the current state",
    429: "Too many requests",
}


def errors(*codes: int, challenge: bool = True) -> dict[str, Schema]:
    """Error responses (the one envelope). `challenge`: a 401 names the expected scheme in
    WWW-Authenticate (the Data and Application APIs; the token endpoints take no header)."""
    extra = {401: ("WWW-Authenticate",) if challenge else (), 429: ("Retry-After",)}
    return {str(code): _response(ERROR_TEXT[code], ref("Error"), extra.get(code, ())) for code in codes}


# Data API limits (per user, per Application, lists computed afresh): a 429 with Retry-After.
ERRORS = errors(400, 401, 404, 429)


def _get(
    summary: str, schema: Schema, *, tag: str, params: list[Schema] | None = None, is_list: bool = False
) -> Schema:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "parameters": [*(params or []), *(LIST_PARAMS if is_list else [])],
            "responses": {"200": _json(schema, headers=LIST_HEADERS if is_list else ()), **ERRORS},
        }
    }


DAY_PARAM = _param("day", "path", DAY, "A local day, YYYY-MM-DD.", required=True)
ID_PARAM = _param("id", "path", STR, "The record's id.", required=True)


def _reading_ref(kind: str) -> Schema:
    return ref(RECORD_TYPES[kind].schema)


def _record_ref(kind: str) -> Schema:
    return ref(PERIOD_SCHEMA[kind]) if kind in PERIOD_SCHEMA else _reading_ref(kind)


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
        summary_ref = {**STR, "pattern": f"^({kind}-[0-9]{{8}}|[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}})$"}
        ref_param = _param(
            "ref", "path", summary_ref, f"A summary id ({kind}-YYYYMMDD), or a local day YYYY-MM-DD.", True
        )
        paths[f"{base}/summaries/{{ref}}"] = _get(f"One daily {kind} summary", ref(name), tag=tag, params=[ref_param])
        paths[f"{base}/summary/{{day}}"] = _get(f"The {kind} summary of a day", ref(name), tag=tag, params=[DAY_PARAM])
    return paths


def _body(name: str, *, required: bool = True) -> Schema:
    """A request body, JSON or form-encoded (both are parsed)."""
    content = {media: {"schema": ref(name)} for media in ("application/json", "application/x-www-form-urlencoded")}
    return {"content": content, "required": required}


def _token_paths() -> dict[str, Schema]:
    tag = "Token exchange"

    def exchange(summary: str, request: str, answer: Schema) -> Schema:
        return {
            "post": {
                "summary": summary,
                "tags": [tag],
                "security": [],
                "requestBody": _body(request),
                "responses": {"200": _json(answer), **errors(400, 401, 404, 429, challenge=False)},
            }
        }

    return {
        "/v1/connect/token": exchange(
            "Exchange client credentials for a session, id, access or refresh token "
            "(404: no such user, or for access, no source connected yet)",
            "TokenRequest",
            ref("TokenResponse"),
        ),
        "/v1/connect/tokens": exchange(
            "Human API v1: a Connect session token becomes an access token and a public token",
            "LegacyTokensRequest",
            ref("LegacyTokens"),
        ),
        "/v1/connect/publictokens": exchange(
            "Human API v1: a new public token for a user (earlier ones stop working)",
            "LegacyPublicTokensRequest",
            ref("LegacyPublicToken"),
        ),
    }


def _app_paths() -> dict[str, Schema]:
    tag = "Application API"
    base = "/v1/apps/{client_id}"
    client = _param("client_id", "path", STR, "The Application's client id.", required=True)
    human = _param("humanId", "path", STR, "The user's id.", required=True)
    security: list[Schema] = [{"appKey": []}]

    def op(summary: str, responses: Schema, params: list[Schema], **extra: Any) -> Schema:
        return {
            "summary": summary,
            "tags": [tag],
            "security": security,
            "parameters": params,
            "responses": {**responses, **errors(429)},  # every operation is limited per Application
            **extra,
        }

    users = array_of(ref("AppUser"))
    user_filter = _param("externalId", "query", STR, "Only the user with this external id.")
    audit_filters = [
        _param("humanId", "query", STR, "Only entries about this user."),
        _param("action", "query", STR, "Only this action, e.g. user.created."),
        _param("since", "query", STR, "Entries after: YYYYMMDDTHHmmssZ or ISO-8601."),
        _param("before", "query", STR, "Entries before: YYYYMMDDTHHmmssZ or ISO-8601."),
    ]
    sync_source = _param("source", "query", SLUG, "Only this source's connection (slug); also accepted in the body.")
    paths: dict[str, Schema] = {
        f"{base}/users": {
            "get": op(
                "The Application's users, oldest first",
                {"200": _json(users, headers=LIST_HEADERS), **errors(400, 401)},
                [client, user_filter, *PAGE_PARAMS],
            ),
            "post": op(
                "Create a user (idempotent: 200 with the same user when the externalId exists)",
                {
                    "201": _json(ref("AppUser"), "Created"),
                    "200": _json(ref("AppUser"), "Exists already"),
                    **errors(400, 401),
                },
                [client],
                requestBody=_body("NewAppUser"),
            ),
        },
        f"{base}/users/{{humanId}}": {
            "get": op("One user", {"200": _json(ref("AppUser")), **errors(401, 404)}, [client, human]),
            "delete": op(
                "Delete a user with every record, token and connection",
                {"204": _response("Deleted"), **errors(401, 404)},
                [client, human],
            ),
        },
        f"{base}/users/{{humanId}}/sources": {
            "get": op(
                "Each connection of a user, its sync status and latest sync runs",
                {"200": _json(array_of(ref("Connection"))), **errors(401, 404)},
                [client, human],
            )
        },
        f"{base}/users/{{humanId}}/sync": {
            "post": op(
                "Sync every active connection of a user now (409: none is active; 429: too many asked for, per hour)",
                {"202": _json(ref("SyncQueued"), "Queued"), **errors(400, 401, 404, 409)},
                [client, human, sync_source],
                requestBody=_body("SyncRequest", required=False),
            )
        },
        f"{base}/audit": {
            "get": op(
                "The Application's audit log, newest first",
                {"200": _json(array_of(ref("AuditEntry")), headers=LIST_HEADERS), **errors(400, 401)},
                [client, *audit_filters, *PAGE_PARAMS],
            )
        },
    }
    for kind in SUMMARY_SUMS:
        paths[f"{base}/users/{kind}/summaries"] = {
            "get": op(
                f"Daily {kind} summaries of every user, oldest change first",
                {"200": _json(array_of(ref(SUMMARY_SCHEMA[kind])), headers=LIST_HEADERS), **errors(400, 401)},
                [client, *LIST_PARAMS],
            )
        }
    for route, kind in BATCH_TYPES.items():
        paths[f"{base}/users/{route}"] = {
            "get": op(
                f"{route} of every user, each with its humanId, oldest change first",
                {"200": _json(array_of(_record_ref(kind)), headers=LIST_HEADERS), **errors(400, 401)},
                [client, *LIST_PARAMS],
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
            "headers": HEADERS,
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


def _response_row(code: str, response: Schema) -> dict[str, str]:
    # X-Request-Id is on every response (said once in the page's description).
    headers = [name for name in response.get("headers", {}) if name != "X-Request-Id"]
    body = describe(response["content"]["application/json"]["schema"]) if "content" in response else ""
    return {
        "code": code,
        "description": response["description"],
        "body": body + (f"; headers {', '.join(headers)}" if headers else ""),
    }


def _request_param(operation: Schema) -> list[dict[str, Any]]:
    """The request body, shown as a parameter of the operation."""
    body = operation.get("requestBody")
    if body is None:
        return []
    schema = body["content"]["application/json"]["schema"]
    return [
        {
            "name": "body",
            "in": "body",
            "required": body["required"],
            "type": describe(schema),
            "description": "JSON or form-encoded.",
        }
    ]


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
                    "params": [
                        *[{**p, "type": describe(p["schema"])} for p in op.get("parameters", [])],
                        *_request_param(op),
                    ],
                    "responses": [_response_row(code, r) for code, r in op["responses"].items()],
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
