"""MUTT settings: the one place that reads the environment (see README, "Configuration").

Static configuration comes from environment variables read once here, through helpers that fail
loudly on malformed values. Runtime knobs (rate limits, thresholds) live in the configuration
center instead, so they change without a restart.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from core.contracts import DEFAULT_DESTINATION
from core.envparse import (
    check_redis_url,
    env_bool,
    env_header,
    env_int,
    env_list,
    env_names,
    env_path,
    env_secret,
    env_str,
    parse_database_url,
)
from core.logging import PLAIN_FORMAT
from mutt_project import embedded

BASE_DIR = Path(__file__).resolve().parent.parent
ENV = os.environ

DEBUG = env_bool(ENV, "MUTT_DEBUG", default=False)
MUTT_DATA_DIR = env_path(ENV, "MUTT_DATA_DIR", BASE_DIR / ".mutt", base=BASE_DIR)

# --- services: real servers when the URLs are set, embedded ones under MUTT_DATA_DIR otherwise ----
DATABASE_URL = env_str(ENV, "DATABASE_URL")
REDIS_URL = env_str(ENV, "REDIS_URL")
MUTT_EMBEDDED_POSTGRES = not DATABASE_URL
MUTT_EMBEDDED_REDIS = not REDIS_URL

_database = parse_database_url(DATABASE_URL) if DATABASE_URL else embedded.database_settings(MUTT_DATA_DIR)
# Overrides the database name of either path (tests point a second process at their test database).
_database["NAME"] = env_str(ENV, "MUTT_DATABASE_NAME") or _database["NAME"]
# A black-holed database must not hold a worker for the OS connect timeout (minutes): fail fast and let the
# caller's outage handling take over. TCP keepalives notice a dead server under an idle connection.
_database["OPTIONS"] = {
    "connect_timeout": env_int(ENV, "MUTT_DB_CONNECT_TIMEOUT", 5, minimum=1, maximum=120),
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    **_database["OPTIONS"],
}
DATABASES = {
    "default": {
        **_database,
        "CONN_MAX_AGE": env_int(ENV, "MUTT_DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "ATOMIC_REQUESTS": False,
    }
}
REDIS_URL = check_redis_url(REDIS_URL) if REDIS_URL else embedded.redis_url(MUTT_DATA_DIR)
# Every Redis key and channel starts with this prefix (core.redis.key), so several
# deployments or test runs can share one Redis, and keys can be hash-tagged for Redis Cluster.
MUTT_REDIS_PREFIX = env_str(ENV, "MUTT_REDIS_PREFIX", "mutt")

# --- secrets (core.secrets is the only reader) ----------------------------------------
# Credentials with CURRENT/NEXT values for zero-downtime rotation. For each NAME the environment may
# set NAME / NAME_CURRENT / NAME_NEXT, or the same with _FILE naming a file that holds the value
# (files are re-read, so a rotated file applies without restart). Vault, when configured, comes first.
MUTT_SECRET_NAMES = [
    "REDIS_PASSWORD",
    "DATABASE_PASSWORD",
    "MOOG_API_KEY",
    "NOTIFY_WEBHOOK_TOKEN",
    # The S3-compatible archive store (retention.archive.store); unset: boto3's own chain (an instance role).
    "ARCHIVE_S3_ACCESS_KEY_ID",
    "ARCHIVE_S3_SECRET_ACCESS_KEY",
]
_SECRET_SUFFIXES = ("", "_CURRENT", "_NEXT", "_FILE", "_CURRENT_FILE", "_NEXT_FILE")
MUTT_SECRETS_ENV = {
    f"{name}{suffix}": ENV[f"{name}{suffix}"]
    for name in MUTT_SECRET_NAMES
    for suffix in _SECRET_SUFFIXES
    if ENV.get(f"{name}{suffix}", "").strip()
}
# Runtime settings are pushed to every process on change; this TTL is only the safety net.
MUTT_CONFIG_TTL_SECONDS = env_int(ENV, "MUTT_CONFIG_TTL_SECONDS", 5, minimum=1, maximum=300)
SECRET_REFRESH_SECONDS = env_int(ENV, "SECRET_REFRESH_SECONDS", 60, minimum=1, maximum=86400)
VAULT_ADDR = env_str(ENV, "VAULT_ADDR")
VAULT_AUTH_METHOD = env_str(ENV, "VAULT_AUTH_METHOD", "token").lower()  # token | approle
VAULT_TOKEN = env_secret(ENV, "VAULT_TOKEN")
VAULT_ROLE_ID = env_str(ENV, "VAULT_ROLE_ID")
VAULT_SECRET_ID_FILE = env_str(ENV, "VAULT_SECRET_ID_FILE")
VAULT_APPROLE_MOUNT = env_str(ENV, "VAULT_APPROLE_MOUNT", "approle")
VAULT_KV_MOUNT = env_str(ENV, "VAULT_KV_MOUNT", "secret")
VAULT_SECRET_PATH = env_str(ENV, "VAULT_SECRET_PATH", "mutt")
VAULT_NAMESPACE = env_str(ENV, "VAULT_NAMESPACE")
VAULT_CA_BUNDLE = env_str(ENV, "VAULT_CA_BUNDLE")
VAULT_TIMEOUT = env_int(ENV, "VAULT_TIMEOUT", 5, minimum=1, maximum=120)

# --- archives of the event audit log (retention.archive.store, ADR-016) -------------------------
# Empty: the folder MUTT_DATA_DIR/archive. Else a path, file:///path or s3://bucket/prefix; for a non-AWS
# S3-compatible server also its endpoint URL. Credentials are secrets (ARCHIVE_S3_* above), never here.
MUTT_ARCHIVE_URL = env_str(ENV, "MUTT_ARCHIVE_URL")
MUTT_ARCHIVE_S3_ENDPOINT = env_str(ENV, "MUTT_ARCHIVE_S3_ENDPOINT")
MUTT_ARCHIVE_S3_REGION = env_str(ENV, "MUTT_ARCHIVE_S3_REGION", "us-east-1")

# --- security ---------------------------------------------------------------------------------
SECRET_KEY = env_secret(ENV, "MUTT_SECRET_KEY")
if not SECRET_KEY:
    # Single-machine default: a random key kept beside the embedded data, created on first use.
    # A deployment sets MUTT_SECRET_KEY(_FILE); system check mutt.E001 insists on it when DEBUG is off
    # and the services are external.
    _key_file = MUTT_DATA_DIR / "secret_key"
    if not _key_file.exists():
        import secrets as _secrets

        MUTT_DATA_DIR.mkdir(parents=True, exist_ok=True)
        _fd = os.open(_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(_fd, "w") as _fh:
            _fh.write(_secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()
    MUTT_SECRET_KEY_GENERATED = True
else:
    MUTT_SECRET_KEY_GENERATED = False

ALLOWED_HOSTS = env_list(ENV, "MUTT_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list(ENV, "MUTT_CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_SECURE = env_bool(ENV, "MUTT_SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HTTPS, for deployments that serve it (off by default: `mutt up` serves plain HTTP on localhost).
# Behind a TLS-terminating proxy, MUTT_PROXY_SSL_HEADER names the header it sets on HTTPS requests
# ("X-Forwarded-Proto: https"); the proxy must strip that header from what clients send.
SECURE_PROXY_SSL_HEADER = env_header(ENV, "MUTT_PROXY_SSL_HEADER")
SECURE_SSL_REDIRECT = env_bool(ENV, "MUTT_SSL_REDIRECT", default=False)
# Local probes and Prometheus scrape over plain HTTP; a redirect would read as "down". Ingest is not
# redirected either: senders do not follow redirects (a batch would be dropped without a word), so the
# ingest view answers plain HTTP with a 403 naming the HTTPS address (ingest/views.py).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^(api/v[0-9]+/)?ingest/?$"]
SECURE_HSTS_SECONDS = env_int(ENV, "MUTT_HSTS_SECONDS", 0, minimum=0, maximum=63_072_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool(ENV, "MUTT_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_bool(ENV, "MUTT_HSTS_PRELOAD", default=False)
# Content Security Policy (django-csp): only this origin's scripts, styles, images and forms; no framing.
# The admin and the browsable API load nothing else and run no inline script. Style attributes stay
# allowed: a few admin pages use them, and they cannot run code. The API docs page adds a <style> block.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# URL names whose responses carry no policy (mutt_project/content_policy.py): ingest's callers are machines,
# and django-csp builds the policy afresh for each response (about 0.1 ms), as much as a fifth of a small
# ingest request's own work. The benchmark adds its ceiling route so both compare alike.
MUTT_CSP_EXEMPT_ROUTES = frozenset({"ingest", "ingest-legacy"})

# Login throttling (django-axes, mutt_project/login_throttle.py). A user name is refused (429, the right
# password too) for the cool-off after MUTT_LOGIN_FAILURE_LIMIT failures from one client address, or after
# MUTT_LOGIN_USERNAME_FAILURE_LIMIT failures from all addresses together (0: no such limit). The cool-off
# runs from the last failure before the lockout: tries during the lockout do not extend it.
MUTT_LOGIN_FAILURE_LIMIT = env_int(ENV, "MUTT_LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
MUTT_LOGIN_USERNAME_FAILURE_LIMIT = env_int(ENV, "MUTT_LOGIN_USERNAME_FAILURE_LIMIT", 50, minimum=0, maximum=100_000)
AXES_FAILURE_LIMIT = "mutt_project.login_throttle.failure_limit"
AXES_COOLOFF_TIME = timedelta(seconds=env_int(ENV, "MUTT_LOGIN_COOLOFF_SECONDS", 900, minimum=1, maximum=604_800))
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# The client address is the peer's, unless MUTT_TRUSTED_PROXY_COUNT reverse proxies stand in front: then it
# is that many entries from the right of X-Forwarded-For (each proxy appends the address it was reached
# from). Without it, behind a proxy every client has the proxy's address: the pair limit then trips per user name.
MUTT_TRUSTED_PROXY_COUNT = env_int(ENV, "MUTT_TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10)
AXES_CLIENT_IP_CALLABLE = "mutt_project.login_throttle.client_address"
# Counted by user name and address together, so colleagues behind one NAT do not lock each other out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # every failure kept (who, from where, locked out or not)
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "admin/mutt/login_locked_out.html"
AUTHENTICATION_BACKENDS = [
    "mutt_project.login_throttle.ThrottledLoginBackend",  # first: refuses a locked-out pair before the password
    "django.contrib.auth.backends.ModelBackend",
]

# --- HTTP and processes -----------------------------------------------------------------------
MUTT_HTTP_HOST = env_str(ENV, "MUTT_HTTP_HOST", "127.0.0.1")
MUTT_HTTP_PORT = env_int(ENV, "MUTT_HTTP_PORT", 8000, minimum=1, maximum=65535)
MUTT_HTTP_WORKERS = env_int(ENV, "MUTT_HTTP_WORKERS", os.cpu_count() or 2, minimum=1, maximum=64)
# Each worker serves Prometheus metrics on its own port (0: off).
MUTT_ALERTER_METRICS_PORT = env_int(ENV, "MUTT_ALERTER_METRICS_PORT", 9101, minimum=0, maximum=65535)
MUTT_FORWARDER_METRICS_PORT = env_int(ENV, "MUTT_FORWARDER_METRICS_PORT", 9102, minimum=0, maximum=65535)
MUTT_REMEDIATION_METRICS_PORT = env_int(ENV, "MUTT_REMEDIATION_METRICS_PORT", 9103, minimum=0, maximum=65535)
# The destinations the alerter adds each alert to (their streams: core.contracts.destination_stream); a
# system check (mutt.E007) makes sure each is registered (delivery.destinations).
MUTT_DESTINATIONS = env_names(ENV, "MUTT_DESTINATIONS", [DEFAULT_DESTINATION])
MUTT_MOCK_MOOG_PORT = env_int(ENV, "MUTT_MOCK_MOOG_PORT", 18080, minimum=1, maximum=65535)
MUTT_LOG_LEVEL = env_str(ENV, "MUTT_LOG_LEVEL", "INFO").upper()
MUTT_LOG_FORMAT = env_str(ENV, "MUTT_LOG_FORMAT", "json")

# --- Django -----------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here: no CDN in the CSP, none needed offline
    "simple_history",
    "axes",
    "django_q",  # the scheduler of periodic jobs (ADR-014): schedules, successes and failures in the admin
    "mutt_project",
    "configcenter",
    "rules",
    "ingest",
    "delivery",
    "retention",
    "devtools",  # mock_moog's management command (`mutt up` runs it in development); no models
]

MIDDLEWARE = [
    "core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Answers ingest requests itself (API keys, no browser): the middleware below never see them.
    "ingest.middleware.IngestShortcutMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Below the ingest shortcut and static files, and it skips ingest itself (mutt_project/content_policy.py).
    "mutt_project.content_policy.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a lockout flagged during authentication into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "mutt_project.urls"
WSGI_APPLICATION = "mutt_project.wsgi.application"
ASGI_APPLICATION = "mutt_project.asgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{MUTT_REDIS_PREFIX}:cache",
        # The rotating pool follows REDIS_PASSWORD's CURRENT/NEXT values like every other connection.
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "CONNECTION_POOL_CLASS": "core.redis.RotatingConnectionPool",
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = MUTT_DATA_DIR / "static"
# The admin's CSS and JavaScript are served by WhiteNoise straight from the installed apps, so a fresh
# checkout needs no collectstatic step; `collectstatic` into STATIC_ROOT still works for a CDN or proxy.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
WHITENOISE_AUTOREFRESH = DEBUG

# --- audit ------------------------------------------------------------------------------------
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True
SIMPLE_HISTORY_REVERT_DISABLED = True  # a revert must go through a service function, with a reason

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_VERSIONING_CLASS": "core.api.versioning.MuttVersioning",
    "DEFAULT_VERSION": "v2",
    "ALLOWED_VERSIONS": ["v1", "v2"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "configcenter.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["configcenter.authentication.HasScope"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.MuttPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MUTT API",
    "DESCRIPTION": "Rules, hosts, teams and events of the Multi-Use Telemetry Tool.",
    "VERSION": "2",
    "SERVE_INCLUDE_SCHEMA": False,
    # From drf-spectacular-sidecar's static files, not a CDN: deployments often have no internet access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- logging ----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "core.logging.JsonFormatter"},
        "plain": {"format": PLAIN_FORMAT},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if MUTT_LOG_FORMAT == "json" else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": MUTT_LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
        # Every attempt is in axes' tables (admin, "Axes"); mutt.auth logs each lockout once. Axes' own
        # line per failed try would flood the log during an attack.
        "axes": {"level": "ERROR"},
    },
}

# django-q2: the home of every periodic job (core.jobs; ADR-014 says why each value). One schedule per job,
# created from the registry by retention.scheduling.sync_schedules (run after every `migrate`), each one
# running retention.scheduling.run_scheduled under the job's Redis lock.
# The broker is the ORM: a handful of tasks an hour, all acting on PostgreSQL, and a task stays in
# django_q_ormq until its result is saved, so one a killed cluster had taken is handed out again.
# A task is handed out again `retry` seconds after it was taken when no result acknowledged it: after a
# killed cluster, and after a failure (ack_failures off; a failed job's sooner, see below), at most
# `max_attempts` times in all. So `retry` must exceed the longest job's timeout (sync_schedules refuses
# a job whose timeout does not fit).
MUTT_SCHEDULER_RETRY_SECONDS = env_int(ENV, "MUTT_SCHEDULER_RETRY_SECONDS", 3600, minimum=5)
MUTT_SCHEDULER_MAX_ATTEMPTS = env_int(ENV, "MUTT_SCHEDULER_MAX_ATTEMPTS", 3, minimum=1, maximum=100)
# A job run that ended failed has released its lock, so its task is handed out again this much sooner
# (retention.scheduling.retry_soon): a transient outage costs an hourly job minutes, not the hour.
MUTT_SCHEDULER_FAILURE_RETRY_SECONDS = env_int(ENV, "MUTT_SCHEDULER_FAILURE_RETRY_SECONDS", 300, minimum=1)
# Two workers: one long job (an archive of a large month) must not hold up the hourly partition job.
MUTT_SCHEDULER_WORKERS = env_int(ENV, "MUTT_SCHEDULER_WORKERS", 2, minimum=1, maximum=16)
Q_CLUSTER = {
    "name": "mutt",
    "orm": "default",
    "workers": MUTT_SCHEDULER_WORKERS,
    # A task no longer than a cluster can hold it: each schedule carries its job's own timeout
    # (q_options), this is only the bound for a task enqueued without one.
    "timeout": MUTT_SCHEDULER_RETRY_SECONDS * 9 // 10,
    "retry": MUTT_SCHEDULER_RETRY_SECONDS,
    "max_attempts": MUTT_SCHEDULER_MAX_ATTEMPTS,
    "ack_failures": False,  # a failed task stays queued, to be retried (True would drop it at its first failure)
    "catch_up": False,  # a cluster that was down runs a missed schedule once, not once per missed interval
    # A cluster holds few tasks waiting for its workers (about one per worker): a task it holds in memory
    # another cluster cannot run until `retry` has passed (the default, workers squared, hoards them).
    "queue_limit": MUTT_SCHEDULER_WORKERS,
    "bulk": 1,
    "save_limit": 1000,  # successes kept (the admin's "Successful tasks"); failures are all kept
    "poll": 1.0,  # seconds between looks at an empty queue: one indexed query
    "label": "Scheduled jobs",
}
