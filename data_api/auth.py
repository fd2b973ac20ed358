"""Authentication of the Data API (an access token) and the Application API (the App Key)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from django.db import connection
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from connect import ratelimit
from connect.models import Application, Human, Token, TokenKind
from humanapi_project import crypto

# Every Data API request starts here: one hand-written query for the token and its Human, as
# the ORM's compiling of the same select_related query costs several times its round trip.
# In model order, as Model.from_db takes them.
_TOKEN_FIELDS = tuple(
    f.attname
    for f in Token._meta.concrete_fields
    if f.attname in ("id", "kind", "application_id", "human_id", "expires_at", "revoked_at")
)
_HUMAN_FIELDS = tuple(field.attname for field in Human._meta.concrete_fields)
_TOKEN_SQL = (
    f"SELECT {', '.join('t.' + name for name in _TOKEN_FIELDS)}, {', '.join('h.' + name for name in _HUMAN_FIELDS)}"
    f" FROM {Token._meta.db_table} t JOIN {Human._meta.db_table} h ON h.id = t.human_id"
    " WHERE t.token_hash = %s AND t.kind = %s"
)


# token hash -> (Human id, Application id) of the tokens this process has seen: a token's owner
# never changes, so its rate limits' buckets are known before the token is read, and counted in
# the same statement (below). Whether the token is still good is read every time.
_OWNERS: dict[str, tuple[str, str]] = {}
_MAX_OWNERS = 10_000
_USABLE = "EXISTS (SELECT 1 FROM t WHERE t.t_revoked_at IS NULL AND t.t_expires_at > statement_timestamp())"
_TOKEN_CTE = (
    f"SELECT {', '.join(f't.{name} AS t_{name}' for name in _TOKEN_FIELDS)},"
    f" {', '.join(f'h.{name} AS h_{name}' for name in _HUMAN_FIELDS)}"
    f" FROM {Token._meta.db_table} t JOIN {Human._meta.db_table} h ON h.id = t.human_id"
    " WHERE t.token_hash = %s AND t.kind = %s"
)


def data_limits(human_id: str, application_id: str) -> tuple[tuple[ratelimit.Limit, str], ...]:
    """The Data API's limits of a request: per Human, then per Application."""
    return (ratelimit.limit("data-human"), human_id), (ratelimit.limit("data-app"), application_id)


def find_counted_access_token(value: str) -> tuple[Token | None, ratelimit.Verdict | None]:
    """`find_access_token`, and, where the token was seen before by this process and the limits
    are kept in PostgreSQL, the verdict of the Data API's rate limits on this request, counted in
    the same statement only if the token is still good (None: not counted yet, see
    HumanView.check_throttles)."""
    if connection.vendor != "postgresql" or not value or len(value) > 200:
        return find_access_token(value), None
    digest = crypto.token_hash(value)
    owner = _OWNERS.get(digest)
    chain = ratelimit.chained(*data_limits(*owner), guard=_USABLE) if owner else None
    if chain is None:
        token = _read_token(digest)
        if token is not None:
            if len(_OWNERS) >= _MAX_OWNERS:
                _OWNERS.clear()
            _OWNERS[digest] = (str(token.human_id), str(token.application_id))
        return token, None
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH t AS ({_TOKEN_CTE}), {chain.ctes} "
            f"SELECT t.*, {chain.counts} FROM (SELECT 1) one LEFT JOIN t ON true",
            [digest, TokenKind.ACCESS.value, *chain.params],
        )
        row = cursor.fetchone()
    assert row is not None
    fields = len(_TOKEN_FIELDS) + len(_HUMAN_FIELDS)
    return _token_of(row[:fields]), chain.verdict(row[fields:])


def _read_token(digest: str) -> Token | None:
    with connection.cursor() as cursor:
        cursor.execute(_TOKEN_SQL, [digest, TokenKind.ACCESS.value])
        return _token_of(cursor.fetchone())


def _token_of(row: Sequence[Any] | None) -> Token | None:
    if row is None or row[0] is None:
        return None
    split = len(_TOKEN_FIELDS)
    token = Token.from_db(connection.alias, list(_TOKEN_FIELDS), list(row[:split]))
    token.human = Human.from_db(connection.alias, list(_HUMAN_FIELDS), list(row[split:]))
    return token


def find_access_token(value: str) -> Token | None:
    """The access token with this value and its Human (`token.human`), whatever its state."""
    if connection.vendor != "postgresql":
        return Token.find(value, (TokenKind.ACCESS,))  # SQLite returns times as text to raw SQL
    if not value or len(value) > 200:
        return None
    return _read_token(crypto.token_hash(value))


class AccessTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer TOKEN` or `?access_token=TOKEN`; request.user is the Human."""

    def authenticate(self, request: Request) -> tuple[Human, Token] | None:
        header = request.headers.get("Authorization", "")
        value = ""
        if header:
            scheme, _, rest = header.partition(" ")
            if scheme.lower() != "bearer" or not rest.strip():
                raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <access token>'")
            value = rest.strip()
        else:
            value = request.query_params.get("access_token", "")
        if not value:
            raise exceptions.NotAuthenticated("An access token is required (Bearer header or access_token parameter)")
        token, verdict = find_counted_access_token(value)
        request._request.data_api_verdict = verdict  # type: ignore[attr-defined]  # read by check_throttles
        if token is None or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Invalid access token")
        if token.is_expired():
            raise exceptions.AuthenticationFailed("Access token expired; exchange for a new one")
        return token.human, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="humanapi"'


class AppKeyAuthentication(authentication.BaseAuthentication):
    """HTTP Basic with the App Key as the username and an empty password, for the Application
    named by `client_id` in the URL; request.user is the Application."""

    def authenticate(self, request: Request) -> tuple[Application, None] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise exceptions.NotAuthenticated("HTTP Basic auth with the App Key as username is required")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise exceptions.AuthenticationFailed("Malformed Basic credentials") from None
        app_key = decoded.partition(":")[0]
        kwargs: dict[str, Any] = request.parser_context.get("kwargs", {}) if request.parser_context else {}
        application = Application.objects.filter(client_id=kwargs.get("client_id", "")).first()
        stored = application.app_key_hash if application else crypto.token_hash("no-such-application")
        if application is None or not crypto.hashes_match(app_key, stored):
            raise exceptions.AuthenticationFailed("Invalid App Key for this application")
        return application, None

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="humanapi"'
