"""Secrets never reach a log line, whatever logger, level or library wrote it.

`RedactSecrets` is a logging filter on every handler (settings.LOGGING, and Celery's worker
handlers): it formats each record once and replaces the value of anything that looks like a
credential with `[redacted]`:

- `name=value` pairs (query strings, form bodies, keyword reprs) whose name is a secret: it ends
  in token, secret, password, signature, api_key or app_key, or is csrf or code_verifier
  (`?access_token=...`, `client_secret=...`);
- code, state, key and auth, words a log line also uses for what they mean ("state=partial",
  "(code=invalid_grant)", kept): as a URL's or a form body's parameters, after `?` or `&` or
  followed by `&` (an OAuth callback's `?code=...&state=...`);
- all of these names as quoted keys of JSON or Python dicts (`"access_token": "..."`,
  `{'code': '...'}`, and requests' `'auth': ('client id', 'client secret')`);
- Authorization, Proxy-Authorization, Cookie, Set-Cookie and X-Api-Key header values, and any
  `Bearer <token>` or `Basic <credentials>` (not a word: "basic authentication" is kept);
- the password of a URL's user info (`redis://:password@host`).

The patterns are linear in the length of the text: a hostile message costs no more to redact
than to write.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "signature", "api_key", "apikey", "app_key")
_SECRET_NAMES = frozenset({"csrf", "code_verifier"})
_PARAMETER_NAMES = frozenset({"code", "state", "key", "auth"})  # secrets in URLs, forms and JSON only
# `name=` (query strings, form bodies, keyword reprs) and `"name": ` (JSON bodies, dict reprs).
_PAIR_NAME = re.compile(r"(?<![\w-])(?P<name>[\w-]{1,64})=")
_QUOTED_NAME = re.compile(r"([\"'])(?P<name>[\w-]{1,64})\1\s*:\s*")
# A value: quoted (to its closing quote, or the end), a tuple (requests' `auth`), or bare (to the
# next &, whitespace, quote, bracket or separator). Always matches, if only the empty string.
_VALUE = re.compile(r"\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|\([^()]*\)?|[^&\s\"'<>,;(){}\[\]]*")
_VALUE_END = re.compile(r"[&\s\"'<>,;(){}\[\]]")  # what ends a bare value
_HEADER = re.compile(
    r"\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)([\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]*",
    re.IGNORECASE,
)
# A credential, not a word of prose ("basic authentication"): a word is letters, lower case after the first.
_SCHEME = re.compile(
    r"\b(bearer|basic)\s+(?-i:(?![A-Za-z][a-z]*(?![A-Za-z0-9._~+/=-])))[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE
)
_USERINFO = re.compile(r"(://[^/\s:@]*):[^/\s@]*@")


def _blank_values(text: str, name: re.Pattern[str], quoted: bool) -> str:
    """The value after each secret name replaced; a value after any other name is searched too
    (a `redirect_uri=` may hold a `code=`). Values are skipped, never scanned twice, and the end
    of a bare value is searched for once per run of text: linear."""
    parts, last, stop = [], 0, -1
    for found in name.finditer(text):
        if found.start() < last:
            continue
        lowered = found["name"].lower()
        if lowered in _PARAMETER_NAMES:
            if not quoted and not (found.start() and text[found.start() - 1] in "?&"):
                if stop < found.end():  # where a bare value from here ends
                    hit = _VALUE_END.search(text, found.end())
                    stop = hit.start() if hit else len(text)
                if not text.startswith("&", stop):
                    continue  # a word of prose, not a form body's first field
        elif lowered not in _SECRET_NAMES and not lowered.endswith(_SECRET_SUFFIXES):
            continue
        value = _VALUE.match(text, found.end())
        parts += [text[last : found.end()], REDACTED]
        last = value.end() if value else found.end()
    parts.append(text[last:])
    return "".join(parts)


def redact(text: str) -> str:
    if not text:
        return text
    text = _HEADER.sub(rf"\1\2{REDACTED}", text)
    text = _SCHEME.sub(rf"\1 {REDACTED}", text)
    text = _blank_values(text, _QUOTED_NAME, quoted=True)
    text = _blank_values(text, _PAIR_NAME, quoted=False)
    return _USERINFO.sub(rf"\1:{REDACTED}@", text)


class RedactSecrets(logging.Filter):
    """Rewrites the record's message, traceback and stack in place (every later handler sees the
    redacted record); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_handlers(logger: logging.Logger) -> None:
    """Put the filter on each of `logger`'s handlers that lacks it (handlers made outside
    settings.LOGGING, such as Celery's)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
