"""Settings, read from the environment. Every value has a safe default for one machine.

The helpers below fail loudly on a value they cannot parse: a typo in production should stop
the process at start, not surface later as odd behaviour.
"""

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def parse_database_url(url: str) -> dict[str, object]:
    """Turn `postgres://user:pass@host:port/name?opt=v` or `sqlite:///path` into DATABASES['default']."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative.db is relative to the project; sqlite:////abs.db is absolute.
        name = unquote(parts.path)[1:]
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name if name.startswith("/") else str(BASE_DIR / name),
            # The demo's web server and worker share the file: WAL and IMMEDIATE avoid "locked".
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        if not parts.path.strip("/"):
            raise ImproperlyConfigured("DATABASE_URL needs a database name")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": dict(parse_qsl(parts.query)),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60),
            # A reused connection is checked with a `SELECT 1` round trip at the start of each
            # request. Where the database is local and dependable (or a pooler checks it),
            # DATABASE_CONN_HEALTH_CHECKS=0 saves that round trip on every request.
            "CONN_HEALTH_CHECKS": env_bool("DATABASE_CONN_HEALTH_CHECKS", True),
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parts.scheme!r} is not supported (use postgres:// or sqlite://)")


DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
if SECRET_KEY == DEV_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured("Set SECRET_KEY: the development key is refused when DEBUG is off")
# Previous secret keys, comma-separated: what they signed (admin sessions, Connect forms, OAuth
# results) and the encryption key derived from them stay valid while they are listed here.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
# How many reverse proxies in front of the web processes append to X-Forwarded-For; the client
# address (audit log, per-IP rate limits) is taken from there. 0: REMOTE_ADDR.
TRUSTED_PROXIES = env_int("TRUSTED_PROXIES", 0)
# Where this server is reached from outside (used for OAuth redirect URIs); derived from the
# request when empty.
PUBLIC_BASE_URL = env_str("PUBLIC_BASE_URL", "").rstrip("/")

# Demo mode serves a sample client page at /demo/ and is meant for one machine only.
DEMO_MODE = env_bool("DEMO_MODE", False)
DEMO_HISTORY_DAYS = env_int("DEMO_HISTORY_DAYS", 30, minimum=1)
DEMO_HEART_RATE_INTERVAL_MINUTES = env_int("DEMO_HEART_RATE_INTERVAL_MINUTES", 10, minimum=1)
DEMO_CREDENTIALS_FILE = env_str("DEMO_CREDENTIALS_FILE", str(BASE_DIR / ".demo" / "application.json"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "connect",
    "sources",
    "data_api",
    "humanapi_project.apps.ProjectConfig",
]

MIDDLEWARE = [
    "humanapi_project.middleware.RequestIdMiddleware",
    # /healthz, /readyz and /metrics (answered before host checks: probes address a pod by its
    # IP), the count of 429s, and the JSON request line when LOG_FORMAT=json.
    "humanapi_project.observability.ObservabilityMiddleware",
    "humanapi_project.middleware.JsonMethodNotAllowedMiddleware",
    "humanapi_project.middleware.RejectNulMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "humanapi_project.urls"
WSGI_APPLICATION = "humanapi_project.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": parse_database_url(env_str("DATABASE_URL", "sqlite:///db.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

SECURE_CONTENT_TYPE_NOSNIFF = True
# HTTPS hardening, off until the operator turns it on (humanapi_project.checks refuses
# combinations that contradict each other).
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Paths (regular expressions, without the leading slash) answered over plain http too: health
# checks of a load balancer usually come without TLS.
SECURE_REDIRECT_EXEMPT = env_list("SECURE_REDIRECT_EXEMPT", [r"^healthz/?$", r"^readyz/?$", r"^livez/?$"])
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The header a TLS-terminating reverse proxy sets on requests that came over https, as
# "X-Forwarded-Proto: https" (the value defaults to "https"). Only a proxy that always sets or
# overwrites it may be trusted this way.
TRUSTED_PROXY_TLS_HEADER = env_str("TRUSTED_PROXY_TLS_HEADER", "").strip()


def proxy_ssl_header(setting: str) -> tuple[str, str] | None:
    """Django's SECURE_PROXY_SSL_HEADER (`("HTTP_X_FORWARDED_PROTO", "https")`) from the header's
    name and value."""
    if not setting:
        return None
    name, _, value = setting.partition(":")
    name, value = name.strip(), value.strip() or "https"
    if not name or not all(c.isascii() and (c.isalnum() or c == "-") for c in name) or not value.isprintable():
        raise ImproperlyConfigured(
            f"TRUSTED_PROXY_TLS_HEADER must be a header name and value like 'X-Forwarded-Proto: https', got {setting!r}"
        )
    return "HTTP_" + name.upper().replace("-", "_"), value


SECURE_PROXY_SSL_HEADER = proxy_ssl_header(TRUSTED_PROXY_TLS_HEADER)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "humanapi_project.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "humanapi_project.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# Tokens (seconds).
SESSION_TOKEN_TTL = env_int("SESSION_TOKEN_TTL", 3600, minimum=60)
ACCESS_TOKEN_TTL = env_int("ACCESS_TOKEN_TTL", 86400, minimum=60)
REFRESH_TOKEN_TTL = env_int("REFRESH_TOKEN_TTL", 90 * 86400, minimum=60)
# Legacy v1 public tokens reopen Connect; legacy v1 access tokens have no refresh flow, so they
# live longer (see connect.services.legacy_tokens_exchange).
PUBLIC_TOKEN_TTL = env_int("PUBLIC_TOKEN_TTL", 365 * 86400, minimum=60)
LEGACY_ACCESS_TOKEN_TTL = env_int("LEGACY_ACCESS_TOKEN_TTL", 365 * 86400, minimum=60)
# How long a user has to finish a provider's OAuth authorize page (seconds).
OAUTH_STATE_TTL = env_int("OAUTH_STATE_TTL", 600, minimum=30)

# Rate limits (connect.ratelimit): requests per window of RATE_LIMIT_WINDOW seconds, unless
# said to be per hour (RATE_LIMIT_SLOW_WINDOW). Counters live in PostgreSQL (shared by every web
# process), or in Redis when RATE_LIMIT_REDIS_URL is set. 0 disables a limit. A request over one
# gets 429 and Retry-After.
RATE_LIMIT_WINDOW = env_int("RATE_LIMIT_WINDOW", 60, minimum=1)
# The window of the slow limits (syncs asked for, connections changed), seconds.
RATE_LIMIT_SLOW_WINDOW = env_int("RATE_LIMIT_SLOW_WINDOW", 3600, minimum=1)
# Per Application, counting only requests whose client secret is right: anyone can send a
# client_id, so failures must never use up the tenant's own budget.
RATE_LIMIT_TOKEN_PER_CLIENT = env_int("RATE_LIMIT_TOKEN_PER_CLIENT", 600)
# Wrong credentials per (client_id, address): guessing a secret is slowed where it comes from.
RATE_LIMIT_TOKEN_FAILURES = env_int("RATE_LIMIT_TOKEN_FAILURES", 20)
RATE_LIMIT_TOKEN_PER_IP = env_int("RATE_LIMIT_TOKEN_PER_IP", 300)
# Connect's form, disconnect and sign-in (OAuth start) requests, per client address (counted
# before the session is checked) and per Connect session; failed sign-ins per (session,
# username), so a password can't be guessed, nor sprayed over usernames, through this server.
RATE_LIMIT_CONNECT_PER_IP = env_int("RATE_LIMIT_CONNECT_PER_IP", 300)
RATE_LIMIT_CONNECT_PER_SESSION = env_int("RATE_LIMIT_CONNECT_PER_SESSION", 60)
RATE_LIMIT_CONNECT_FAILURES = env_int("RATE_LIMIT_CONNECT_FAILURES", 5)
# Connections made or removed per Human and hour: each sends a webhook, a new one starts a
# history sync, so a reconnect loop must not flood either.
RATE_LIMIT_CONNECT_CHANGES = env_int("RATE_LIMIT_CONNECT_CHANGES", 20)
# Data API requests per Human and per Application (of all its Humans), counted once the access
# token is known; and per Human, deep pages of lists filtered on createdAt/updatedAt computed
# afresh (a new filter value, or data changed since), each a pass over the filtered list.
RATE_LIMIT_DATA_PER_HUMAN = env_int("RATE_LIMIT_DATA_PER_HUMAN", 3000)
RATE_LIMIT_DATA_PER_APP = env_int("RATE_LIMIT_DATA_PER_APP", 30000)
RATE_LIMIT_DATA_LIST_PASSES = env_int("RATE_LIMIT_DATA_LIST_PASSES", 30)
# Application API requests per Application, counted once the App Key is right.
RATE_LIMIT_APP_API_PER_APP = env_int("RATE_LIMIT_APP_API_PER_APP", 6000)
# Syncs asked for (POST /users/{humanId}/sync) per Human and per Application, per hour: each
# spends provider quota that every tenant of this server shares.
RATE_LIMIT_SYNC_PER_HUMAN = env_int("RATE_LIMIT_SYNC_PER_HUMAN", 12)
RATE_LIMIT_SYNC_PER_APP = env_int("RATE_LIMIT_SYNC_PER_APP", 1200)
# Changes a provider's notifications hand to the workers per connection and window, each a
# fetch against the provider's budget; past it (a burst, or forged events where the provider
# signs nothing) the connection's next sync is brought forward instead.
RATE_LIMIT_PUSH_PER_CONNECTION = env_int("RATE_LIMIT_PUSH_PER_CONNECTION", 60)
RATE_LIMIT_REDIS_URL = env_str("RATE_LIMIT_REDIS_URL", "")

# Keys that encrypt provider credentials at rest: comma-separated Fernet keys, the first one
# encrypts, all of them decrypt (rotation: put the new key first, run `manage.py rotate_keys`).
# Empty: one key derived from SECRET_KEY. Keys derived from SECRET_KEY and SECRET_KEY_FALLBACKS
# always decrypt too, so setting this list, or changing SECRET_KEY, loses nothing.
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS", [])

# Slugs Connect offers (empty: every source that is configured; Demo only with DEMO_MODE=1
# or when named here).
SOURCES_ENABLED = env_list("SOURCES_ENABLED", [])
# Which source answers a day's summary when a Human has several (comma-separated slugs, first
# wins; sources not named follow in the order the Human connected them). An Application may
# set its own.
SOURCE_PRIORITY = env_list("SOURCE_PRIORITY", [])
# Notify URLs that resolve to loopback, private or link-local addresses are refused unless set
# (development and tests, where the receiver runs on this machine).
ALLOW_PRIVATE_NOTIFY_URLS = env_bool("ALLOW_PRIVATE_NOTIFY_URLS", False)
# Seconds one webhook delivery attempt may take in all (resolving, connecting, sending, reading
# the whole answer); checked by a system check (data_api.checks).
NOTIFY_TIMEOUT_SECONDS = env_str("NOTIFY_TIMEOUT_SECONDS", "3")
# A webhook attempt handed to the broker is due for beat again this long after (seconds), should
# its message be lost. Longer than an attempt takes (NOTIFY_TIMEOUT_SECONDS).
NOTIFY_REQUEUE_AFTER = env_int("NOTIFY_REQUEUE_AFTER", 120, minimum=5)
# Provider endpoints on plain http (an emulator, a local proxy) are refused unless this is set.
ALLOW_HTTP_PROVIDERS = env_bool("ALLOW_HTTP_PROVIDERS", False)
if ALLOW_HTTP_PROVIDERS:
    # requests-oauthlib refuses http authorize and token URLs unless oauthlib is told so.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
# Outbound requests name this server, so a provider's own audit log shows who called.
OUTBOUND_USER_AGENT = env_str("OUTBOUND_USER_AGENT", "HumanAPI-SelfHosted/1.0 (data aggregation server)")
# Providers may grant fewer scopes than asked; that is theirs to decide, not an error.
os.environ.setdefault("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
# Every SOURCE_<SLUG>_<KEY> variable, read once; the sources app looks values up here.
SOURCE_SETTINGS = {name: value for name, value in os.environ.items() if name.startswith("SOURCE_")}

# Celery. With no broker configured, the filesystem transport keeps the demo free of servers.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_DIR = Path(env_str("CELERY_BROKER_DIR", str(BASE_DIR / ".celery-broker")))
if CELERY_BROKER_URL == "filesystem://":
    for sub in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
    # The filesystem transport has no broadcast exchange for remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "humanapi")
# Webhook deliveries have a queue of their own, so a pool of workers can be given to them
# (`celery worker -Q <this queue>`) and slow receivers never hold sync slots. A worker started
# without -Q consumes every queue.
CELERY_NOTIFY_QUEUE = env_str("CELERY_NOTIFY_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-notify")
# Work someone waits for ("sync now", the fetch a provider's notification asks for) has a queue
# of its own, which workers take from first (below): it never waits behind queued backfills and
# scheduled syncs. Checked by a system check (sources.checks): set, and distinct from the others.
CELERY_INTERACTIVE_QUEUE = env_str("CELERY_INTERACTIVE_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-interactive")
# Each queue bound to its own exchange and key: sharing a direct exchange and key would put
# every message in both queues. A worker started without -Q consumes them all, in this order of
# precedence (with -Q, in the order listed there).
CELERY_TASK_QUEUES = [
    Queue(q, Exchange(q), routing_key=q)
    for q in dict.fromkeys((CELERY_INTERACTIVE_QUEUE, CELERY_NOTIFY_QUEUE, CELERY_TASK_DEFAULT_QUEUE))
]
# A sync goes to the interactive queue when its priority says so (sources.tasks.route_by_priority);
# retries and sends after a wait for the rate budget keep the priority, so the queue.
CELERY_TASK_ROUTES = [
    {
        "data_api.tasks.deliver_notification": {"queue": CELERY_NOTIFY_QUEUE},
        "sources.tasks.push_sync": {"queue": CELERY_INTERACTIVE_QUEUE},
    },
    "sources.tasks.route_by_priority",
]
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 5
# How often beat looks for due work (seconds): syncs, webhook attempts, and work whose broker
# message was lost (a broker restarted without persistence); the database says what is due.
BEAT_INTERVAL = env_int("BEAT_INTERVAL", 60, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "enqueue-due-syncs": {"task": "sources.tasks.enqueue_due_syncs", "schedule": float(BEAT_INTERVAL)},
    "enqueue-due-notifications": {"task": "data_api.tasks.enqueue_due_notifications", "schedule": float(BEAT_INTERVAL)},
    "fold-metrics": {"task": "humanapi_project.tasks.fold_metrics", "schedule": float(BEAT_INTERVAL)},
}
# Default interval between incremental syncs of one connection (seconds); per source:
# SOURCE_<SLUG>_SYNC_INTERVAL.
SYNC_INTERVAL = env_int("SYNC_INTERVAL", 3600, minimum=60)

# Provider calls: retries in place while the wait is short; longer waits reschedule the sync.
PROVIDER_RETRY_ATTEMPTS = env_int("PROVIDER_RETRY_ATTEMPTS", 4, minimum=1)
PROVIDER_RETRY_MAX_WAIT = env_int("PROVIDER_RETRY_MAX_WAIT", 20, minimum=0)
# Percent of each window of a provider's rate budget kept for interactive work ("sync now", a
# notification's fetch); backfills use the rest (sources.ratebudget). Checked: 0 to 90.
PROVIDER_RATE_RESERVE = env_int("PROVIDER_RATE_RESERVE", 20, minimum=0)
SYNC_MAX_RETRIES = env_int("SYNC_MAX_RETRIES", 12, minimum=0)
# A sync renews its claim on its connection with every stored page; a claim not renewed for this
# long (seconds) is taken over, so a crashed worker blocks a connection this long at most.
SYNC_CLAIM_TIMEOUT = env_int("SYNC_CLAIM_TIMEOUT", 900, minimum=10)
# A sync handed to the broker (on connecting, on "sync now", by beat) counts as due again this
# long after (seconds) unless a run has started, so a message the broker lost is sent again.
SYNC_REQUEUE_AFTER = env_int("SYNC_REQUEUE_AFTER", 900, minimum=5)
# Redis holds a message a worker took but never acknowledged (a worker killed mid-task) this long
# (seconds) before another worker gets it. Longer than SYNC_CLAIM_TIMEOUT, so the sync it carries
# finds the dead worker's claim stale and resumes from the stored cursor. Longer than the longest
# task, or a task still running is started twice (the second waits on the claim, harmlessly).
BROKER_VISIBILITY_TIMEOUT = env_int("BROKER_VISIBILITY_TIMEOUT", 3600, minimum=10)
if BROKER_VISIBILITY_TIMEOUT <= SYNC_CLAIM_TIMEOUT:
    raise ImproperlyConfigured(
        f"BROKER_VISIBILITY_TIMEOUT ({BROKER_VISIBILITY_TIMEOUT}) must be longer than SYNC_CLAIM_TIMEOUT "
        f"({SYNC_CLAIM_TIMEOUT}): a sync redelivered from a killed worker would find its claim still held"
    )
if CELERY_BROKER_URL.split(":", 1)[0] in ("redis", "rediss", "redis+socket"):
    # Each worker looks for such messages every 10 s (kombu's default would be every 100 s).
    # A worker waits on its queues in the order it consumes them (CELERY_TASK_QUEUES, or its -Q
    # list) and takes the next message from the first that has one, instead of kombu's default
    # round robin: interactive work first, then webhook deliveries, then syncs nobody waits for.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": BROKER_VISIBILITY_TIMEOUT,
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": 1,
        "queue_order_strategy": "priority",
    }
# First wait before a rescheduled sync (doubling, with jitter, capped at an hour); a provider's
# Retry-After is a floor.
SYNC_RETRY_BASE_SECONDS = env_int("SYNC_RETRY_BASE_SECONDS", 30, minimum=1)
# Whether each page of a sync waits, as it commits, for PostgreSQL to flush it to disk. Off (the
# default): it commits without waiting (synchronous_commit off for that transaction). A crash of
# PostgreSQL itself may then lose the last pages written (at most about three times
# wal_writer_delay, 0.6 s by default), each with the cursor that moved in its transaction, so the
# next run fetches them again; nothing is left half-written. The run's own record is always
# flushed, and with it every page before it.
SYNC_DURABLE_PAGES = env_bool("SYNC_DURABLE_PAGES", False)
# A run in which some types failed (a 404, a 403, a provider down) syncs again this soon.
SYNC_FAILED_TYPE_RETRY = env_int("SYNC_FAILED_TYPE_RETRY", 900, minimum=60)

# Push notifications from providers (webhooks in, sources.push): with PUBLIC_BASE_URL set, the
# server keeps each configured provider's subscription pointing at PUBLIC_BASE_URL/hooks/<slug>.
PUSH_ENABLED = env_bool("PUSH_ENABLED", True)
# While a source's notifications are healthy, polling is only a reconciliation, this often
# (seconds) instead of SYNC_INTERVAL.
PUSH_RECONCILE_INTERVAL = env_int("PUSH_RECONCILE_INTERVAL", 21600, minimum=60)
# A signed notification older (or newer) than this many seconds is refused as a replay.
PUSH_REPLAY_WINDOW = env_int("PUSH_REPLAY_WINDOW", 300, minimum=10)
# How often beat checks the subscriptions at the providers (made, listed, renewed), seconds.
PUSH_CHECK_INTERVAL = env_int("PUSH_CHECK_INTERVAL", 3600, minimum=60)
CELERY_BEAT_SCHEDULE["maintain-push"] = {"task": "sources.tasks.maintain_push", "schedule": float(PUSH_CHECK_INTERVAL)}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
# "text" (the default), or "json": one JSON object a line, with one line per request (method,
# path without its query string, status, duration, request id, client). A system check
# refuses any other value.
LOG_FORMAT = env_str("LOG_FORMAT", "text").strip().lower()
_LOG_FORMATTER = "json" if LOG_FORMAT == "json" else "plain"
# A worker keeps the handlers below (JSON lines) instead of installing its own text ones.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
# The bearer token Prometheus sends for GET /metrics; empty: /metrics answers 404.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# Every handler redacts secrets (token and secret query parameters, Authorization headers, token
# fields of JSON bodies) from each record, whatever logger and level it comes from; Celery's
# worker handlers get the same filter (humanapi_project.celery).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "humanapi_project.log_redaction.RedactSecrets"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "humanapi_project.logs.JsonFormatter"},
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": _LOG_FORMATTER, "filters": ["redact_secrets"]},
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "django.server",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (console when DEBUG, mail_admins) are replaced: its records reach
        # the root handler, redacted. runserver's request lines carry query strings (Connect tokens).
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        # Token request and response bodies at DEBUG: redacted too, but never worth the risk.
        "requests_oauthlib": {"level": "WARNING"},
        "oauthlib": {"level": "WARNING"},
        # Request lines with their query strings (Humanity's access_token travels there), redacted.
        "urllib3": {"level": LOG_LEVEL},
    },
}
