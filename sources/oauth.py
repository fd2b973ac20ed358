"""OAuth2 authorization code sources: the standard parts, on requests-oauthlib.

A provider subclasses `OAuth2CodeSource`, sets its endpoints and scopes, and overrides only what
its provider does differently (`identify` to learn the provider's user id; `token_request` for a
provider whose token endpoint is not standard, such as Withings).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests
from django.conf import settings
from oauthlib.oauth2 import OAuth2Error
from requests_oauthlib import OAuth2Session

from .base import (
    AuthKind,
    AuthorizationFailed,
    Credentials,
    RefreshRefused,
    SourcePlugin,
    TransientError,
    token_expiry,
)
from .http import DEFAULT_TIMEOUT, TRANSIENT_FAILURES, ProviderHttp, raise_for_token_status


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge) per RFC 7636."""
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class OAuth2CodeSource(SourcePlugin):
    auth_kind = AuthKind.OAUTH2_CODE
    # How the client authenticates at the token endpoint: "body" (client_id and client_secret as
    # form fields) or "basic" (HTTP Basic), as each provider documents.
    client_auth: ClassVar[str] = "body"
    scope_separator: ClassVar[str] = " "
    extra_authorize_params: ClassVar[dict[str, str]] = {}

    @property
    def client_id(self) -> str:
        return self.setting("CLIENT_ID")

    @property
    def client_secret(self) -> str:
        return self.setting("CLIENT_SECRET")

    def _session(self, redirect_uri: str | None = None, token: dict[str, Any] | None = None) -> OAuth2Session:
        session = OAuth2Session(self.client_id, redirect_uri=redirect_uri, scope=list(self.scopes) or None, token=token)
        session.headers["User-Agent"] = settings.OUTBOUND_USER_AGENT
        return session

    def authorization_url(self, *, redirect_uri: str, state: str, code_challenge: str | None) -> str:
        params: dict[str, str] = dict(self.extra_authorize_params)
        if code_challenge and self.supports_pkce:
            params.update(code_challenge=code_challenge, code_challenge_method="S256")
        session = self._session(redirect_uri)
        if self.scope_separator != " ":
            # requests-oauthlib always passes its own `scope`; a pre-joined string is sent as is.
            session.scope = self.scope_separator.join(self.scopes)
        url, _ = session.authorization_url(self.authorize_url, state=state, **params)
        return str(url)

    def exchange_code(
        self, *, code: str, redirect_uri: str, code_verifier: str | None, http: ProviderHttp
    ) -> Credentials:
        fields: dict[str, str] = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier and self.supports_pkce:
            fields["code_verifier"] = code_verifier
        try:
            token = self.token_request(fields, http)
        except RefreshRefused as exc:
            raise AuthorizationFailed(f"{self.name} did not accept the authorization: {exc}") from None
        return self.credentials_from_token(token, http)

    def refresh(self, credentials: dict[str, Any], http: ProviderHttp) -> Credentials:
        refresh_token = credentials.get("refresh_token")
        if not refresh_token:
            raise RefreshRefused("no refresh token stored")
        token = self.token_request({"grant_type": "refresh_token", "refresh_token": refresh_token}, http)
        if "refresh_token" not in token:  # providers that don't rotate keep the old one valid
            token["refresh_token"] = refresh_token
        renewed = self.credentials_from_token(token, http, previous=credentials)
        return renewed

    def token_request(self, fields: dict[str, str], http: ProviderHttp) -> dict[str, Any]:
        """POST the token endpoint; a refusal raises RefreshRefused, a failure TransientError.

        oauthlib reports the status of the OAuth error class, not the HTTP status, so the HTTP
        answer is judged first (a compliance hook): an outage must never read as a refusal,
        which would send a healthy connection to `reauth_required`."""
        session = self._session(fields.get("redirect_uri"))
        session.register_compliance_hook("access_token_response", self._judge_token_response)
        session.register_compliance_hook("refresh_token_response", self._judge_token_response)
        try:
            if fields["grant_type"] == "authorization_code":
                token = session.fetch_token(
                    self.token_url,
                    code=fields["code"],
                    client_secret=self.client_secret,
                    include_client_id=self.client_auth == "body",
                    auth=(self.client_id, self.client_secret) if self.client_auth == "basic" else None,
                    code_verifier=fields.get("code_verifier"),
                    timeout=DEFAULT_TIMEOUT,
                )
            else:
                extra = (
                    {"client_id": self.client_id, "client_secret": self.client_secret}
                    if self.client_auth == "body"
                    else {}
                )
                token = session.refresh_token(
                    self.token_url,
                    refresh_token=fields["refresh_token"],
                    auth=(self.client_id, self.client_secret) if self.client_auth == "basic" else None,
                    timeout=DEFAULT_TIMEOUT,
                    **extra,
                )
        except OAuth2Error as exc:
            raise RefreshRefused(f"{self.name} refused the grant ({exc.error})") from None
        except TRANSIENT_FAILURES:
            raise TransientError(f"{self.name} token endpoint could not be reached") from None
        except Warning as warning:
            # A narrower grant than asked for is the provider's (and user's) choice, not an error.
            token = getattr(warning, "token", None)
            if not token:
                raise TransientError(f"{self.name} token endpoint answered unexpectedly") from None
        except ValueError:
            raise TransientError(f"{self.name} token endpoint returned a malformed body") from None
        return dict(token)

    def _judge_token_response(self, response: requests.Response) -> requests.Response:
        raise_for_token_status(response, self.name)
        return _without_unreadable_lifetime(response)

    def credentials_from_token(
        self, token: dict[str, Any], http: ProviderHttp, previous: dict[str, Any] | None = None
    ) -> Credentials:
        if not token.get("access_token"):
            raise RefreshRefused(f"{self.name} returned no access token")
        expires_at = token_expiry(token, datetime.now(UTC))
        data = {
            "access_token": token["access_token"],
            "refresh_token": token.get("refresh_token", ""),
            "token_type": token.get("token_type", "Bearer"),
            "scope": token.get("scope", ""),
        }
        user_id = (previous or {}).get("user_id") or self.identify(token, http)
        data["user_id"] = user_id
        return Credentials(data=data, expires_at=expires_at, external_user_id=str(user_id))

    def identify(self, token: dict[str, Any], http: ProviderHttp) -> str:
        """The provider's id of the user who authorized (from the token response, or a call)."""
        return str(token.get("user_id", ""))

    def auth_headers(self, credentials: dict[str, Any]) -> dict[str, str]:
        return {"Authorization": f"Bearer {credentials['access_token']}"}


def _without_unreadable_lifetime(response: requests.Response) -> requests.Response:
    """oauthlib turns `expires_in` into an absolute expiry with int(): a lifetime it can't read
    ("soon", 1e400, a list) would fail the whole grant, and `true` would pass as one second. Such
    a lifetime is dropped before oauthlib sees it: the expiry is then unknown, and the token is
    refreshed when the provider refuses it (`token_expiry`)."""
    try:
        body = response.json()
    except ValueError:
        return response  # oauthlib reports a malformed body itself
    unreadable = isinstance(body, dict) and "expires_in" in body
    if unreadable and token_expiry({"expires_in": body["expires_in"]}, datetime.now(UTC)) is None:
        del body["expires_in"]
        response._content = json.dumps(body).encode()
    return response
