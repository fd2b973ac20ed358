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
]

MIDDLEWARE = [
    "humanapi_project.middleware.RequestIdMiddleware",
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
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

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

# Rate limits of the token endpoints: requests per window, per client IP, per Application (right
# secret only) and per (client_id, IP) for wrong credentials.
# Counters live in PostgreSQL (shared by every web process), or in Redis when
# RATE_LIMIT_REDIS_URL is set. 0 disables a limit.
RATE_LIMIT_WINDOW = env_int("RATE_LIMIT_WINDOW", 60, minimum=1)
# Per Application, counting only requests whose client secret is right: anyone can send a
# client_id, so failures must never use up the tenant's own budget.
RATE_LIMIT_TOKEN_PER_CLIENT = env_int("RATE_LIMIT_TOKEN_PER_CLIENT", 600)
# Wrong credentials per (client_id, address): guessing a secret is slowed where it comes from.
RATE_LIMIT_TOKEN_FAILURES = env_int("RATE_LIMIT_TOKEN_FAILURES", 20)
RATE_LIMIT_TOKEN_PER_IP = env_int("RATE_LIMIT_TOKEN_PER_IP", 300)
RATE_LIMIT_REDIS_URL = env_str("RATE_LIMIT_REDIS_URL", "")

# Keys that encrypt provider credentials at rest: comma-separated Fernet keys, the first one
# encrypts, all of them decrypt (rotation: put the new key first, run `manage.py rotate_keys`).
# Empty: one key derived from SECRET_KEY.
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
# without -Q consumes both queues.
CELERY_NOTIFY_QUEUE = env_str("CELERY_NOTIFY_QUEUE", f"{CELERY_TASK_DEFAULT_QUEUE}-notify")
# Each queue bound to its own exchange and key: sharing a direct exchange and key would put
# every message in both queues.
CELERY_TASK_QUEUES = [Queue(q, Exchange(q), routing_key=q) for q in (CELERY_TASK_DEFAULT_QUEUE, CELERY_NOTIFY_QUEUE)]
CELERY_TASK_ROUTES = {"data_api.tasks.deliver_notification": {"queue": CELERY_NOTIFY_QUEUE}}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 5
CELERY_BEAT_SCHEDULE = {
    "enqueue-due-syncs": {"task": "sources.tasks.enqueue_due_syncs", "schedule": 60.0},
    "enqueue-due-notifications": {"task": "data_api.tasks.enqueue_due_notifications", "schedule": 60.0},
}
# Default interval between incremental syncs of one connection (seconds); per source:
# SOURCE_<SLUG>_SYNC_INTERVAL.
SYNC_INTERVAL = env_int("SYNC_INTERVAL", 3600, minimum=60)

# Provider calls: retries in place while the wait is short; longer waits reschedule the sync.
PROVIDER_RETRY_ATTEMPTS = env_int("PROVIDER_RETRY_ATTEMPTS", 4, minimum=1)
PROVIDER_RETRY_MAX_WAIT = env_int("PROVIDER_RETRY_MAX_WAIT", 20, minimum=0)
SYNC_MAX_RETRIES = env_int("SYNC_MAX_RETRIES", 12, minimum=0)
# A sync renews its claim on its connection with every stored page; a claim not renewed for this
# long (seconds) is taken over, so a crashed worker blocks a connection this long at most.
SYNC_CLAIM_TIMEOUT = env_int("SYNC_CLAIM_TIMEOUT", 900, minimum=60)
# First wait before a rescheduled sync (doubling, with jitter, capped at an hour); a provider's
# Retry-After is a floor.
SYNC_RETRY_BASE_SECONDS = env_int("SYNC_RETRY_BASE_SECONDS", 30, minimum=1)
# A run in which some types failed (a 404, a 403, a provider down) syncs again this soon.
SYNC_FAILED_TYPE_RETRY = env_int("SYNC_FAILED_TYPE_RETRY", 900, minimum=60)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # requests-oauthlib and oauthlib log token request and response bodies at DEBUG, and urllib3
    # every request line, with its query string (Humanity's access_token travels there).
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "requests_oauthlib": {"level": "WARNING"},
        "oauthlib": {"level": "WARNING"},
        "urllib3": {"level": "INFO"},
    },
}
