"""Settings for the evaluation platform. Every value comes from the environment (see evalsite/env.py).

Defaults run on one machine with nothing else installed: SQLite and a Celery broker kept in files under
var/. DATABASE_URL and CELERY_BROKER_URL switch to PostgreSQL and Redis. DJANGO_DEBUG=0 selects the
production shape, which requires DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS and hardens cookies and TLS. DEBUG is
off unless DJANGO_DEBUG=1: the embedded default is safe to expose by mistake.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from evalsite.env import env_bool, env_choice, env_float, env_int, env_list, env_says_no, env_str
from generation.contract import GPU_QUEUE

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("EVALSITE_VAR_DIR", str(BASE_DIR / "var")))

# DEBUG pages list settings, paths and local variables: only on when asked for (DJANGO_DEBUG=1, development).
DEBUG = env_bool("DJANGO_DEBUG", False)
# Two shapes. "local", the embedded default: one machine over plain HTTP, a secret generated once and kept under
# var/, only local host names. "production" (docker/, the benches; DJANGO_DEBUG=0 set explicitly still selects
# it): behind a TLS proxy, DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS required, secure cookies, HSTS, redirect.
PRODUCTION = env_bool("EVALSITE_PRODUCTION", env_says_no("DJANGO_DEBUG"))
if DEBUG and PRODUCTION:
    raise ImproperlyConfigured("DJANGO_DEBUG=1 and EVALSITE_PRODUCTION=1 cannot go together.")


def _local_secret_key(path: Path) -> str:
    """The local shape's secret: made once, readable by its owner only, the same for every process."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(64))
    return path.read_text().strip()


if PRODUCTION:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", required=True)
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("dev-only"):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a random string of at least 50 characters.")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required in production (DJANGO_DEBUG=0).")
else:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY") or _local_secret_key(VAR_DIR / "secret_key")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Redoc served from local static files: no CDN, works offline
    "django_celery_beat",
    "django_celery_results",
    "evalsite.catalog",
    "evalsite.runs",
    "evalsite.rating",
    "evalsite.dashboards",
    "evalsite.preferences",  # preference data imported from elsewhere, analysed like a campaign
    "evalsite.demo",  # seed_demo: above the others, imports them all
    "evalsite.crowd",  # simulate_raters: a simulated crowd that only speaks HTTP to the site
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "evalsite.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "evalsite.urls"
WSGI_APPLICATION = "evalsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------------------
_DEFAULT_DB = f"sqlite:///{VAR_DIR / 'evalsite.sqlite3'}"
_db_url = env_str("DATABASE_URL", _DEFAULT_DB)
if urlparse(_db_url).scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
    raise ImproperlyConfigured(
        f"DATABASE_URL={_db_url!r}: unsupported scheme; use sqlite:///path or postgres://user@host:port/name."
    )
try:
    _db = dj_database_url.parse(_db_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL={_db_url!r} cannot be parsed: {exc}") from exc
# A persistent connection that a database restart killed is noticed and replaced at the start of the next request
# (instead of failing it); a request that meets the database down gets a 503 with Retry-After (views.server_error).
_db["CONN_HEALTH_CHECKS"] = True
if _db["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend, trying a refused new connection again for a few seconds (a fast restart of the server).
    _db["ENGINE"] = "evalsite.dbbackends.postgresql"
    # The rater API's hand-written statements run server-bound and stay prepared on a connection from their Nth use
    # (evalsite.dbbackends.postgresql.prepared_cursor); Django's own queries bind on the client and are never
    # prepared. 0 turns it off (a pooler that cannot keep prepared statements, e.g. PgBouncer in transaction mode).
    _db.setdefault("OPTIONS", {})["prepare_threshold"] = env_int("DATABASE_PREPARE_THRESHOLD", 5, minimum=0) or None
DATABASE_CONNECT_PATIENCE = env_float("DATABASE_CONNECT_PATIENCE", 5.0)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Web server and worker write to the same file: wait for locks instead of failing at once.
    _db["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # One test database file per test process, so that two test runs on one machine never share it.
    _db.setdefault("TEST", {})["NAME"] = str(VAR_DIR / f"test-evalsite-{os.getpid()}.sqlite3")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n ---------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# The first logs users in and loads them per request (a leaner ModelBackend); Django's own stays listed for the
# sessions that name it (evalsite/auth_backends.py).
AUTHENTICATION_BACKENDS = ["evalsite.auth_backends.UserBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files -------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "evalsite" / "static"]
# Local: static files straight from the source folders (no collectstatic); production: the collected,
# hashed and compressed copies.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env_str("EVALSITE_MEDIA_ROOT", str(VAR_DIR / "media")))
# Image files are never served from MEDIA_URL directly: an access-checked view streams them.
MEDIA_URL = "/media-not-served/"

_storage_backend = env_choice("EVALSITE_STORAGE", "filesystem", ("filesystem", "s3"))
if _storage_backend == "s3":
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME", required=True),
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL"),
            "access_key": env_str("AWS_ACCESS_KEY_ID"),
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY"),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Celery -----------------------------------------------------------------------------------------
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if urlparse(CELERY_BROKER_URL).scheme not in {"filesystem", "redis", "rediss", "amqp", "amqps", "memory"}:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL={CELERY_BROKER_URL!r}: unsupported scheme; use filesystem://, redis:// or amqp://."
    )
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "control_folder": str(_BROKER_DIR / "control"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.2,  # kombu's default of 1 s idles the worker between jobs
    }
else:
    # Redis: a task not acknowledged within this time is delivered again (must exceed the hard time limit).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 7200)}
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "django-db")
CELERY_RESULT_EXTENDED = True
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"generation.*": {"queue": GPU_QUEUE}}  # generation.contract.GENERATE_TASK and kin
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300, minimum=1)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Housekeeping entries; beat's DatabaseScheduler copies them into the database, where staff can edit them.
CELERY_BEAT_SCHEDULE = {
    "expire rater assignments": {"task": "rating.expire_assignments", "schedule": 60.0},
    "update rater quality": {"task": "rating.update_rater_quality", "schedule": 3600.0},
    # hourly, so a day is never missed when beat was down at midnight; the task keeps one per campaign and day
    "snapshot campaign results": {"task": "dashboards.take_daily_snapshots", "schedule": 3600.0},
}
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- REST API ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"rater": env_str("EVALSITE_RATER_RATE", "120/min")},
    # Proxies in front of the site: the client address is taken this many hops back in X-Forwarded-For (0:
    # REMOTE_ADDR; a client's own X-Forwarded-For is never believed).
    "NUM_PROXIES": env_int("EVALSITE_PROXY_HOPS", 1 if PRODUCTION else 0, minimum=0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Text-to-image preference evaluation API",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "REDOC_DIST": "SIDECAR",
}
# "default": the engine's hints and sessions, per process unless CACHE_URL names a Redis. "shared": what must
# hold across processes and machines (rate limits, login and join throttles): the same Redis, or, in the
# embedded default, files under var/ that every process on this machine sees.
_CACHE_URL = env_str("CACHE_URL")
CACHES = {
    # hints only: a Redis restart makes reads miss and writes skip (evalsite.cache), never a failed request
    "default": {"BACKEND": "evalsite.cache.TolerantRedisCache", "LOCATION": _CACHE_URL}
    if _CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "shared": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _CACHE_URL}
    if _CACHE_URL
    else {
        "BACKEND": "evalsite.cache.SharedFileCache",
        "LOCATION": str(VAR_DIR / "cache"),
        "OPTIONS": {"MAX_ENTRIES": 100_000},  # a rate-limit count per rater and address: never cull live ones
    },
}
# New rater accounts one client address may make through invite links, and failed logins per address and per
# user name, in the shared cache.
EVALSITE_JOIN_RATE = env_str("EVALSITE_JOIN_RATE", "10/hour")
EVALSITE_LOGIN_FAILURE_RATE = env_str("EVALSITE_LOGIN_FAILURE_RATE", "10/hour")

# --- Platform ---------------------------------------------------------------------------------------
# The most an uploaded .zip of outside images may unpack to (runs pages, evalsite.runs.imports.import_zip).
EVALSITE_IMPORT_MAX_BYTES = env_int("EVALSITE_IMPORT_MAX_BYTES", 2 * 1024**3, minimum=1)
EVALSITE_ASSIGNMENT_TTL_SECONDS = env_int("EVALSITE_ASSIGNMENT_TTL_SECONDS", 600, minimum=10)
EVALSITE_MODEL_CACHE_SIZE = env_int("EVALSITE_MODEL_CACHE_SIZE", 2, minimum=1)
# Generation jobs: images per job (= per backend call), leases after which the sweeper sends a job again,
# attempts before a job fails, torch CPU threads per worker process (0 = torch's default).
EVALSITE_GENERATION_BATCH_SIZE = env_int("EVALSITE_GENERATION_BATCH_SIZE", 16, minimum=1)
EVALSITE_JOB_LEASE_SECONDS = env_int("EVALSITE_JOB_LEASE_SECONDS", 600, minimum=10)
EVALSITE_DISPATCH_LEASE_SECONDS = env_int("EVALSITE_DISPATCH_LEASE_SECONDS", 3600, minimum=10)
EVALSITE_JOB_MAX_ATTEMPTS = env_int("EVALSITE_JOB_MAX_ATTEMPTS", 3, minimum=1)
# A job that finds the image storage full (ENOSPC, a quota) is sent again after this long.
EVALSITE_STORAGE_FULL_RETRY_SECONDS = env_int("EVALSITE_STORAGE_FULL_RETRY_SECONDS", 300, minimum=1)
EVALSITE_TORCH_THREADS = env_int("EVALSITE_TORCH_THREADS", 0, minimum=0)
# Threads of a gpu worker process that PNG-encode and write a finished batch's images side by side (zlib and file
# writes release the GIL): at a GPU's rate one thread encoding 16 images of 512 px took ~0.7 s per job here.
EVALSITE_STORE_THREADS = env_int("EVALSITE_STORE_THREADS", min(8, os.cpu_count() or 1), minimum=1)
EVALSITE_DEVICE = env_str("EVALSITE_DEVICE", "auto")
EVALSITE_MIN_GOLD_ACCURACY = env_float("EVALSITE_MIN_GOLD_ACCURACY", 0.7)
# CLIP model for CLIP score and CLIP-feature FID: a local transformers CLIP directory or the demo dual encoder.
EVALSITE_CLIP_MODEL = env_str("EVALSITE_CLIP_MODEL", str(BASE_DIR / "demo_models" / "clip-demo"))
# torch-fidelity's Inception weights file; when set, FID is also computed on Inception features.
EVALSITE_INCEPTION_WEIGHTS = env_str("EVALSITE_INCEPTION_WEIGHTS", "")

# --- Production hardening ---------------------------------------------------------------------------
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_AGE = env_int("DJANGO_SESSION_COOKIE_AGE", 60 * 60 * 12, minimum=60)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

VAR_DIR.mkdir(parents=True, exist_ok=True)
if not PRODUCTION:
    STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise looks there first; local static files come from the finders
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "control", "processed"):
        (_BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
