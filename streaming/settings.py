"""Django settings for Streamer.

Everything is configured by environment variables with safe defaults; README.md lists
them all. Nothing here reads a file outside the repository.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from streaming.secret_env import resolve_secret_env

BASE_DIR = Path(__file__).resolve().parent.parent

# <NAME>_SECRET_ARN (Secrets Manager / SSM SecureString, e.g. on Lambda) becomes <NAME>
# before anything below reads the environment.
resolve_secret_env(os.environ)


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean environment variable (1/true/yes/on)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_list(name: str, default: str) -> list[str]:
    """Read a comma-separated environment variable."""
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "var"))
DEBUG = env_bool("DJANGO_DEBUG", False)
_DEV_SECRET = "streamer-insecure-development-key-change-me"  # noqa: S105
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip()
if not SECRET_KEY:
    if not DEBUG:
        # Sessions, CSRF tokens and signed cookies would be forgeable with a public key.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set: set it to a long random value "
            "(DJANGO_DEBUG=1 uses a development key instead)."
        )
    SECRET_KEY = _DEV_SECRET
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

# --- HTTPS (README.md "Production settings"); secure unless DEBUG is on -----------------
# Behind a proxy that terminates TLS, e.g. "HTTP_X_FORWARDED_PROTO,https".
_PROXY_SSL_HEADER = env_list("DJANGO_SECURE_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER and len(_PROXY_SSL_HEADER) != 2:
    raise ImproperlyConfigured(
        "DJANGO_SECURE_PROXY_SSL_HEADER must be 'HEADER,value', e.g. 'HTTP_X_FORWARDED_PROTO,https'"
    )
SECURE_PROXY_SSL_HEADER = tuple(_PROXY_SSL_HEADER) or None
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
# Load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "streaming.admin_site.StreamerAdminConfig",  # django.contrib.admin, our site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "connections",
    "streaming",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks
]

# Messages in the (server-side) session, never in a readable cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "streaming.urls"
ASGI_APPLICATION = "streaming.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "streaming" / "templates"],
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

DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{DATA_DIR / 'streamer.sqlite3'}",
        conn_max_age=60,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

# --- Admin login throttling (django-axes; failures are stored in the Django database, so
# every process sees them) ------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out username+IP first
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("DJANGO_AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("DJANGO_AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The peer address only: a client-set X-Forwarded-For must not pick its own IP. Behind a
# proxy, daphne --proxy-headers puts the proxy's X-Forwarded-For into REMOTE_ADDR.
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
# The JS client is its own npm package (clients/js/); its source folder is served under the
# app's namespace, so the demo page imports it from /static/streaming/streamer-client.js.
STATICFILES_DIRS = [("streaming", BASE_DIR / "clients" / "js" / "src")]

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Channels -----------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
# Messages a process's fan-out hub channel holds (connections/hub.py): channels_redis
# drops a group_send to a full channel silently, and the default capacity is 100.
HUB_CHANNEL_CAPACITY = env_int("STREAMER_HUB_CHANNEL_CAPACITY", 100_000)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py's 5 s default read timeout equals channels_redis's 5 s blocking
            # pop: an idle consumer would time out and crash. Give reads headroom.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "capacity": 1000,
                "expiry": 60,
                # Hub channels: one per process, every frame to its tenants and users.
                "channel_capacity": {"*!streamer.hub.*": HUB_CHANNEL_CAPACITY},
            },
        }
    }
else:
    # One process only (REDIS_URL empty): Channels' in-memory layer, which refuses a send
    # to a socket of another process instead of losing it (connections/layers.py).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "connections.layers.ProcessChannelLayer",
            "CONFIG": {
                "capacity": 1000,
                "expiry": 60,
                "channel_capacity": {"*!streamer.hub.*": HUB_CHANNEL_CAPACITY},
            },
        }
    }

# --- DynamoDB -----------------------------------------------------------------------
# Unset: the embedded local server the run command starts. Set to "": real AWS.
DYNAMODB_ENDPOINT_URL = os.environ.get("DYNAMODB_ENDPOINT_URL", "http://127.0.0.1:8001") or None
DYNAMODB_REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
STREAMER_TABLE_PREFIX = os.environ.get("STREAMER_TABLE_PREFIX", "streamer")
# Shards of the "due" index (see storage/requests/model.py): spreads pending requests
# over several partitions so workers never hammer one hot key.
STREAMER_QUEUE_SHARDS = env_int("STREAMER_QUEUE_SHARDS", 4)

# --- Authentication ---------------------------------------------------------------------
_DEV_JWT_SECRET = "streamer-development-jwt-secret-change-me"  # noqa: S105
STREAMER_JWT_SECRET = os.environ.get("STREAMER_JWT_SECRET", _DEV_JWT_SECRET if DEBUG else "")
STREAMER_JWT_PUBLIC_KEY = os.environ.get("STREAMER_JWT_PUBLIC_KEY", "")
STREAMER_JWT_ALGORITHMS = env_list(
    "STREAMER_JWT_ALGORITHMS", "RS256" if STREAMER_JWT_PUBLIC_KEY else "HS256"
)
STREAMER_JWT_ISSUER = os.environ.get("STREAMER_JWT_ISSUER", "") or None
STREAMER_JWT_AUDIENCE = os.environ.get("STREAMER_JWT_AUDIENCE", "") or None
STREAMER_JWT_LEEWAY_S = 30

# --- Limits (docs/protocol.md §5) ----------------------------------------------------------------
STREAMER_MAX_FRAME_BYTES = env_int("STREAMER_MAX_FRAME_BYTES", 128 * 1024)
STREAMER_RATE_LIMIT_FRAMES = env_int("STREAMER_RATE_LIMIT_FRAMES", 100)
STREAMER_RATE_LIMIT_WINDOW_S = env_int("STREAMER_RATE_LIMIT_WINDOW_S", 10)
STREAMER_IDLE_TIMEOUT_S = env_int("STREAMER_IDLE_TIMEOUT_S", 600)
# A connection's last_seen is written at most this often, on client activity (pings
# count); cleanup_connections removes records not seen for much longer.
STREAMER_TOUCH_INTERVAL_S = env_int("STREAMER_TOUCH_INTERVAL_S", 300)
# Progress of one request: frames to clients and writes to DynamoDB per second at most
# (the latest value wins, streaming/progress.py).
STREAMER_PROGRESS_FRAMES_PER_S = float(os.environ.get("STREAMER_PROGRESS_FRAMES_PER_S", "10"))
STREAMER_PROGRESS_WRITES_PER_S = float(os.environ.get("STREAMER_PROGRESS_WRITES_PER_S", "1"))
# How long an ended request stays readable before DynamoDB's TTL removes it.
STREAMER_REQUEST_TTL_S = env_int("STREAMER_REQUEST_TTL_S", 7 * 24 * 3600)
STREAMER_TENANT_CACHE_S = env_int("STREAMER_TENANT_CACHE_S", 10)
# 1.1 limits; the tenant's record in the admin may override the per-tenant ones.
STREAMER_MAX_CONNECTIONS_PER_USER = env_int("STREAMER_MAX_CONNECTIONS_PER_USER", 20)
STREAMER_MAX_ACTIVE_REQUESTS_PER_USER = env_int("STREAMER_MAX_ACTIVE_REQUESTS_PER_USER", 20)
STREAMER_MAX_ACTIVE_REQUESTS_PER_TENANT = env_int("STREAMER_MAX_ACTIVE_REQUESTS_PER_TENANT", 1000)
# Unsent frames one connection may have waiting before it is closed with 4408.
STREAMER_MAX_OUTPUT_BYTES = env_int("STREAMER_MAX_OUTPUT_BYTES", 1024 * 1024)
# Bytes a connection may send per STREAMER_RATE_LIMIT_WINDOW_S, then RATE_LIMITED.
STREAMER_MAX_INBOUND_BYTES = env_int("STREAMER_MAX_INBOUND_BYTES", 4 * 1024 * 1024)
# Tokens whose exp lies further than this after iat (or now) are refused.
STREAMER_MAX_TOKEN_LIFETIME_S = env_int("STREAMER_MAX_TOKEN_LIFETIME_S", 24 * 3600)

# Threads of the pool that runs storage calls of the real-time path (connections/storage_pool.py).
STREAMER_STORAGE_THREADS = env_int("STREAMER_STORAGE_THREADS", 16)

# --- Worker -----------------------------------------------------------------------------
STREAMER_WORKER_CONCURRENCY = env_int("STREAMER_WORKER_CONCURRENCY", 8)
STREAMER_LEASE_S = env_int("STREAMER_LEASE_S", 30)
STREAMER_POLL_INTERVAL_S = float(os.environ.get("STREAMER_POLL_INTERVAL_S", "1.0"))
# Time limit of a Django Tasks @task run by Streamer's workers (streaming/tasks_backend.py).
STREAMER_TASK_TIMEOUT_S = env_int("STREAMER_TASK_TIMEOUT_S", 3600)
# Django Tasks (django-tasks on Django 5.2): @task functions run as Streamer requests.
TASKS = {"default": {"BACKEND": "streaming.tasks_backend.StreamerTaskBackend"}}
# Without Redis the web process runs the worker itself (one process, in-memory layer).
STREAMER_INPROCESS_WORKER = env_bool("STREAMER_INPROCESS_WORKER", not REDIS_URL)

# --- Transports (how a frame reaches a socket), chosen like CHANNEL_LAYERS -------------
STREAMER_TRANSPORTS = {
    "channels": {"BACKEND": "connections.transports.channels.ChannelsTransport", "CONFIG": {}},
    "apigw": {
        "BACKEND": "connections.transports.apigw.ApiGatewayTransport",
        "CONFIG": {"max_attempts": 4, "base_backoff_s": 0.05, "max_backoff_s": 2.0},
    },
}

# API Gateway: the Management API endpoint when a custom domain fronts the WebSocket API
# (default: derived from each event's domainName/stage), and the shared secret that
# authenticates POST /apigw/events (unset: the endpoint refuses everything).
STREAMER_APIGW_ENDPOINT = os.environ.get("STREAMER_APIGW_ENDPOINT", "")
# API ids / custom domains whose events may name the outbound endpoint (empty: any
# <api-id>.execute-api.<region>.amazonaws.com); ignored when STREAMER_APIGW_ENDPOINT is set.
STREAMER_APIGW_ALLOWED_HOSTS = env_list("STREAMER_APIGW_ALLOWED_HOSTS", "")
STREAMER_APIGW_SHARED_SECRET = os.environ.get("STREAMER_APIGW_SHARED_SECRET", "")

# Largest body POST /api/v1/publish and POST /apigw/events accept (a 128 KiB frame fits).
STREAMER_MAX_HTTP_BODY_BYTES = env_int("STREAMER_MAX_HTTP_BODY_BYTES", 256 * 1024)
# Bearer token /metrics asks for; unset: /metrics is open (keep it on a private network).
STREAMER_METRICS_TOKEN = os.environ.get("STREAMER_METRICS_TOKEN", "").strip()

# The benchmark's baseline endpoints and actions (streaming/benchmarks.py); off by default.
STREAMER_BENCH_ENDPOINTS = env_bool("STREAMER_BENCH", False)

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "pynamodb": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
