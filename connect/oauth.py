"""The OAuth2 authorization-code flow of Connect, for every `AuthKind.OAUTH2_CODE` source.

1. `oauth_start`: from a valid Connect session, create a single-use state row (random `state`
   stored hashed, expiring after OAUTH_STATE_TTL, PKCE S256 verifier encrypted when the provider
   supports PKCE) and return the provider's authorize URL. The state is also bound to the browser
   that started the flow by a random cookie (`BROWSER_COOKIE`, stored hashed): a callback URL
   carried to another browser (login CSRF, a leaked link) is refused.
2. `oauth_callback`: consume the state with one conditional UPDATE (so a replay, even a
   concurrent one, finds it spent), exchange the code with the verifier (no transaction is open
   during that network call), store the connection, audit.

Every failure is an `OAuthProblem` whose message is fit for the user and holds no secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.utils import timezone

from humanapi_project import crypto
from sources.base import AuthKind, AuthorizationFailed, SourceError
from sources.http import ProviderHttp
from sources.models import Connection
from sources.oauth import OAuth2CodeSource, pkce_pair
from sources.registry import plugin_classes
from sources.services import UnknownSource, connection_store, offered_plugin

from .audit import audit
from .models import Actor, OAuthState, Token
from .services import connect_completed, previous_status

BROWSER_COOKIE = "hapi_oauth_browser"
CALLBACK_PATH = "/connect/oauth/callback"
_RESULT_SALT = "connect.oauth-result"


class OAuthProblem(Exception):
    """A flow that can't go on; `state` is set once the state row is known (and consumed)."""

    def __init__(self, status: int, message: str, *, slug: str = "", state: OAuthState | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.slug = slug
        self.state = state


@dataclass
class OAuthOutcome:
    """What the callback tells the user (and, in redirect mode, where to send them)."""

    ok: bool
    slug: str
    message: str = ""
    connection: Connection | None = None
    state: OAuthState | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def redirect_token(self) -> str:
        """The Connect token to go back with, in redirect mode ("" in popup mode)."""
        if self.state is None or not self.state.redirect_mode:
            return ""
        return str(self.state.secrets.get("connect_token", ""))


def redirect_uri_for(request: HttpRequest) -> str:
    """The one redirect URI operators register: PUBLIC_BASE_URL, else this request's origin."""
    base = settings.PUBLIC_BASE_URL or f"{request.scheme}://{request.get_host()}"
    return base + CALLBACK_PATH


def code_source(slug: str) -> OAuth2CodeSource:
    try:
        plugin = offered_plugin(slug, (AuthKind.OAUTH2_CODE,))
    except UnknownSource:
        raise OAuthProblem(404, f"No source {slug!r} that connects with OAuth", slug=slug) from None
    if not isinstance(plugin, OAuth2CodeSource):
        raise OAuthProblem(404, f"No source {slug!r} that connects with OAuth", slug=slug)
    return plugin


def oauth_start(
    *,
    session: Token,
    session_value: str,
    slug: str,
    redirect_mode: bool,
    browser_id: str,
    request: HttpRequest,
) -> str:
    """Record a pending authorization for this Connect session; return the authorize URL."""
    plugin = code_source(slug)
    state = crypto.new_token()
    verifier, challenge = pkce_pair() if plugin.supports_pkce else ("", "")
    sealed: dict[str, str] = {}
    if verifier:
        sealed["code_verifier"] = verifier
    if redirect_mode:
        sealed["connect_token"] = session_value
    redirect_uri = redirect_uri_for(request)
    OAuthState.objects.create(
        state_hash=crypto.token_hash(state),
        connect_token=session,
        human_id=session.human_id,
        source=slug,
        redirect_uri=redirect_uri,
        browser_hash=crypto.token_hash(browser_id),
        redirect_mode=redirect_mode,
        sealed=crypto.encrypt_json(sealed) if sealed else "",
        expires_at=timezone.now() + timedelta(seconds=settings.OAUTH_STATE_TTL),
    )
    audit(
        "oauth.started",
        actor=Actor.END_USER,
        application=session.application,
        human_id=session.human_id,
        request=request,
        source=slug,
        pkce=bool(verifier),
    )
    return plugin.authorization_url(redirect_uri=redirect_uri, state=state, code_challenge=challenge or None)


def oauth_callback(*, state: str, code: str, error: str, browser_id: str, request: HttpRequest) -> OAuthOutcome:
    """Finish a flow. Raises OAuthProblem; the problem carries the state row once consumed."""
    row = state_consume(state=state, browser_id=browser_id)
    session = row.connect_token
    if error:
        audit(
            "oauth.denied",
            actor=Actor.END_USER,
            application=session.application,
            human_id=row.human_id,
            request=request,
            source=row.source,
            error=error[:64],
        )
        name = _source_name(row.source)
        message = f"You did not allow access to {name}, so nothing was connected."
        if error != "access_denied":
            message = f"{name} could not authorize the connection ({error[:64]}). Please try again."
        raise OAuthProblem(400, message, slug=row.source, state=row)
    if not code or len(code) > 2000:
        raise OAuthProblem(
            400, "The provider returned no authorization code. Please try again.", slug=row.source, state=row
        )
    return _exchange(row, code, request)


def _exchange(row: OAuthState, code: str, request: HttpRequest) -> OAuthOutcome:
    session = row.connect_token
    try:
        plugin = code_source(row.source)
    except OAuthProblem as problem:  # the operator withdrew the source meanwhile: still go back
        raise OAuthProblem(problem.status, problem.message, slug=row.source, state=row) from None
    verifier = row.secrets.get("code_verifier") or None
    try:
        credentials = plugin.exchange_code(
            code=code, redirect_uri=row.redirect_uri, code_verifier=verifier, http=ProviderHttp()
        )
    except AuthorizationFailed:
        _audit_failure(row, request, "refused")
        message = f"{plugin.name} did not accept the authorization. Please try again."
        raise OAuthProblem(400, message, slug=row.source, state=row) from None
    except SourceError:
        _audit_failure(row, request, "unreachable")
        message = f"{plugin.name} could not be reached. Please try again in a moment."
        raise OAuthProblem(502, message, slug=row.source, state=row) from None
    before = previous_status(session.human, row.source)
    connection = connection_store(human=session.human, slug=row.source, credentials=credentials, request=request)
    connect_completed(session=session, connection=connection, previous_status=before, request=request)
    return OAuthOutcome(ok=True, slug=row.source, connection=connection, state=row)


def state_consume(*, state: str, browser_id: str) -> OAuthState:
    """Spend the state row (one conditional UPDATE), or say clearly why it can't be spent."""
    if not state or len(state) > 200:
        raise OAuthProblem(400, "This sign-in link is not valid. Start again from Connect.")
    state_hash = crypto.token_hash(state)
    now = timezone.now()
    spent = OAuthState.objects.filter(
        state_hash=state_hash,
        used_at__isnull=True,
        expires_at__gt=now,
        browser_hash=crypto.token_hash(browser_id),
    ).update(used_at=now)
    row = OAuthState.objects.select_related("connect_token__application", "connect_token__human").filter(
        state_hash=state_hash
    )
    found = row.first()
    if spent and found is not None:
        if not found.connect_token.is_usable(now):
            # The Connect session was revoked (e.g. a leaked token) or ended meanwhile: no
            # connection may be added to its Human any more.
            raise OAuthProblem(
                401, "This Connect session has ended. Open Connect again from the app.", slug=found.source
            )
        return found
    if found is None:
        raise OAuthProblem(400, "This sign-in link is not valid. Start again from Connect.")
    if found.used_at is not None:
        raise OAuthProblem(400, "This sign-in link was already used. Start again from Connect.", slug=found.source)
    if found.is_expired(now):
        raise OAuthProblem(400, "This sign-in took too long and expired. Start again from Connect.", slug=found.source)
    raise OAuthProblem(
        403,
        "This sign-in was started in another browser or Connect session. Start again from Connect.",
        slug=found.source,
    )


def _audit_failure(row: OAuthState, request: HttpRequest, reason: str) -> None:
    audit(
        "oauth.failed",
        actor=Actor.END_USER,
        application=row.connect_token.application,
        human_id=row.human_id,
        request=request,
        source=row.source,
        reason=reason,
    )


def _source_name(slug: str) -> str:
    cls = plugin_classes().get(slug)
    return cls.name if cls else slug


# --- the result, carried back to the Connect page in redirect mode ------------------------


def result_seal(result: dict[str, Any], human_id: str) -> str:
    """Signed (not secret) so that nobody can craft a Connect link showing a made-up message."""
    return signing.dumps({"h": human_id, "r": result}, salt=_RESULT_SALT, compress=True)


def result_open(value: str, human_id: str) -> dict[str, Any] | None:
    if not value or len(value) > 4000:
        return None
    try:
        data = signing.loads(value, salt=_RESULT_SALT, max_age=settings.OAUTH_STATE_TTL)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("h") != human_id or not isinstance(data.get("r"), dict):
        return None
    return dict(data["r"])


def states_cleanup(*, batch: int = 5000) -> int:
    """Delete state rows that expired more than an hour ago, in batches."""
    cutoff = timezone.now() - timedelta(hours=1)
    total = 0
    while True:
        ids = list(OAuthState.objects.filter(expires_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        total += OAuthState.objects.filter(pk__in=ids).delete()[0]
