"""Settings for every environment, driven by environment variables.

With no environment at all the project runs on the *embedded default*: SQLite under
``var/``, Channels' in-memory layer, Celery in eager mode and files under ``var/media``.
Setting ``DATABASE_URL``, ``REDIS_URL``, ``CELERY_BROKER_URL`` and the S3 variables turns
on the *full stack*. Every variable is listed in README.md ("Configuration").
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from chat_project.localkeys import read_or_create
from chat_project.queues import celery_queue_settings

django_stubs_ext.monkeypatch()  # lets models and admin classes be subscripted for typing

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    """Return the development secret key kept in ``var/``, generating it on first use.

    The key is never committed: it is made on the machine that runs the app.
    """
    return read_or_create(VAR_DIR / "secret_key", lambda: secrets.token_urlsafe(64).encode()).decode().strip()


DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY_FROM_ENV = bool(env.str("DJANGO_SECRET_KEY", default=""))
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _embedded_secret_key()
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS hardening has its own switch so that a production-mode server can also run on
# loopback (tests, benchmarks) or behind a proxy that terminates TLS.
SECURE_HTTPS = env.bool("DJANGO_SECURE_HTTPS", default=False)
if SECURE_HTTPS:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=60 * 60 * 24 * 30)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "chat_project",
    "accounts",
    "conversations",
    "media",
    "notifications",
    "moderation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chat_project.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chat_project.urls"
ASGI_APPLICATION = "chat_project.asgi.application"
WSGI_APPLICATION = None

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

# --- Database ---------------------------------------------------------------------------
DATABASE_URL = env.str("DATABASE_URL", default="")
DATABASE_POOL_SIZE = env.int("DATABASE_POOL_SIZE", default=16)
# A streaming replica of DATABASE_URL that serves history reads (chat_project/dbrouter.py;
# docs/operations.md, "Read replica"). Empty: every query goes to DATABASE_URL.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")


def _database(url: str) -> dict[str, Any]:
    config: dict[str, Any] = env.db_url_config(url)
    if DATABASE_POOL_SIZE and config["ENGINE"] == "django.db.backends.postgresql":
        # A psycopg pool: database work of many sockets runs on several threads at once,
        # each borrowing a connection per call; the pool hands out only healthy ones, so no
        # per-call health-check query is needed.
        config["CONN_MAX_AGE"] = 0
        config.setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": DATABASE_POOL_SIZE, "timeout": 10}
    else:
        config.setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
        config["CONN_HEALTH_CHECKS"] = True
    return config


if DATABASE_REPLICA_URL and not DATABASE_URL:
    raise ImproperlyConfigured("DATABASE_REPLICA_URL is set without DATABASE_URL: a replica of which database?")
if DATABASE_URL:
    DATABASES = {"default": _database(DATABASE_URL)}
    if DATABASE_REPLICA_URL:
        # Under test, Django reads the "replica" through the test database (a mirror).
        DATABASES["replica"] = {**_database(DATABASE_REPLICA_URL), "TEST": {"MIRROR": "default"}}
        DATABASE_ROUTERS = ["chat_project.dbrouter.PrimaryReplicaRouter"]
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, presence, rate windows and cache ------------------------------
# REDIS_URL alone: one Redis for everything. REDIS_SHARD_URLS (comma-separated): the channel
# layer, presence leases and per-user rate windows are spread over these instances instead,
# and REDIS_URL (or, without it, the first shard) keeps only the cache. docs/operations.md,
# "Redis shards".
REDIS_URL = env.str("REDIS_URL", default="")
REDIS_SHARD_URLS: list[str] = [u.strip() for u in env.list("REDIS_SHARD_URLS", default=[]) if u.strip()] or (
    [REDIS_URL] if REDIS_URL else []
)
# Longest wait for one Redis command or connection; past it the shard counts as down.
REDIS_TIMEOUT_SECONDS = env.float("REDIS_TIMEOUT_SECONDS", default=2.0)
CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", default="chat")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="chat")
if REDIS_SHARD_URLS:
    # The pub/sub layer: one SUBSCRIBE per connection (its per-user group) and one PUBLISH
    # per event; measured several times faster than the list-based layer for our fan-out.
    # Ours adds bounded commands and survives losing a shard (chat_project/channel_layer.py).
    CHANNEL_LAYERS: dict[str, Any] = {
        "default": {
            "BACKEND": "chat_project.channel_layer.ShardedPubSubChannelLayer",
            "CONFIG": {"hosts": REDIS_SHARD_URLS, "prefix": CHANNEL_LAYER_PREFIX, "timeout": REDIS_TIMEOUT_SECONDS},
        }
    }
    # One LOCATION, not the shard list: Django's RedisCache treats extra locations as read
    # replicas of the first (writes go to the first, reads to the others), and the login
    # throttle's counters must be read where they were written.
    CACHES: dict[str, Any] = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL or REDIS_SHARD_URLS[0],
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery (RabbitMQ) ------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# Without a broker (embedded default) tasks run in-process, right after the commit that
# scheduled them.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"

# --- Storage ----------------------------------------------------------------------------
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")


def _s3_transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    part = 8 * 1024 * 1024
    config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=2)
    config.max_in_memory_upload_chunks = 2  # parts read ahead of the upload (the memory it holds)
    return config


if AWS_STORAGE_BUCKET_NAME:
    _default_storage: dict[str, Any] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env.str("AWS_S3_ENDPOINT_URL", default="") or None,
            "access_key": env.str("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env.str("AWS_SECRET_ACCESS_KEY", default="") or None,
            "region_name": env.str("AWS_S3_REGION_NAME", default="") or None,
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": env.int("MEDIA_URL_EXPIRY_SECONDS", default=300),
            "file_overwrite": False,
            # Reading an object spools it to a temporary file past 2 MB (the default, 0, keeps
            # every byte of it in memory), and uploads hold two 8 MB parts at a time, not ten.
            "max_memory_size": 2 * 1024 * 1024,
            "transfer_config": _s3_transfer_config(),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT},
    }
STORAGES = {
    "default": _default_storage,
    # Hashed, compressed, cache-forever names once `collectstatic` has built the manifest
    # (make run-stack and deployments do); plain names served from the finders before that.
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if (STATIC_ROOT / "staticfiles.json").exists()
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Serve from the finder in development and when collectstatic has not been run (tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_MANIFEST_STRICT = False

# --- Accounts and auth ------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
# ModelBackend whose sessions end while the account is suspended or banned.
AUTHENTICATION_BACKENDS = ["accounts.backends.AccountBackend"]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Failed logins allowed per window, per username and per client address.
LOGIN_FAILURES_PER_USERNAME = env.int("LOGIN_FAILURES_PER_USERNAME", default=5)
LOGIN_FAILURES_PER_IP = env.int("LOGIN_FAILURES_PER_IP", default=30)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=15 * 60)
# How many proxies in front of us append to X-Forwarded-For (0: use the socket's address).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.DeviceJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "chat_project.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_THROTTLE_RATES": {"register": env.str("REGISTER_RATE", default="30/hour")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # The register throttle keys on the client address as our own proxies report it.
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_SECONDS", default=5 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=30)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_CLAIM": "user_id",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat API",
    "DESCRIPTION": (
        "REST API of the self-hosted messenger. Real-time traffic goes over the WebSocket "
        "at /ws/, described in docs/protocol.md. Every error has the shape "
        '{"error": {"code": ..., "detail": ..., "fields": {...}}}.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "ENUM_NAME_OVERRIDES": {
        "ConversationKindEnum": "conversations.models.Conversation.Kind",
        "MemberRoleEnum": "conversations.models.Membership.Role",
        "AttachmentKindEnum": "media.models.Attachment.Kind",
        "DevicePlatformEnum": "accounts.models.Device.Platform",
        "ReportReasonEnum": "moderation.models.Report.Reason",
        "ReportStatusEnum": "moderation.models.Report.Status",
    },
}

# --- WebSocket ---------------------------------------------------------------------------
# Origins allowed to open a cookie-authenticated socket, besides those whose host is in
# ALLOWED_HOSTS. Bearer-token sockets (native apps) may send no Origin at all.
WS_ALLOWED_ORIGINS = env.list("WS_ALLOWED_ORIGINS", default=[])
WS_HEARTBEAT_SECONDS = env.int("WS_HEARTBEAT_SECONDS", default=25)

# --- Internationalisation, logging ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}

# --- Messaging ---------------------------------------------------------------------------------
MESSAGE_MAX_CHARS = env.int("MESSAGE_MAX_CHARS", default=65_536)
MESSAGE_EDIT_WINDOW_SECONDS = env.int("MESSAGE_EDIT_WINDOW_SECONDS", default=15 * 60)
GROUP_MAX_MEMBERS = env.int("GROUP_MAX_MEMBERS", default=1024)
# Up to this many members, every member hears each delivered/read cursor move (ticks);
# above it only the reader's own devices do, and senders ask for a message's info.
RECEIPT_FANOUT_MAX_MEMBERS = env.int("RECEIPT_FANOUT_MAX_MEMBERS", default=64)
TYPING_EXPIRY_SECONDS = env.int("TYPING_EXPIRY_SECONDS", default=6)
WS_MAX_FRAME_BYTES = env.int("WS_MAX_FRAME_BYTES", default=256 * 1024)
WS_IDLE_TIMEOUT_SECONDS = env.int("WS_IDLE_TIMEOUT_SECONDS", default=WS_HEARTBEAT_SECONDS * 3)
WS_SENDS_PER_SECOND = env.float("WS_SENDS_PER_SECOND", default=10.0)
WS_SEND_BURST = env.int("WS_SEND_BURST", default=30)
WS_USER_SENDS_PER_MINUTE = env.int("WS_USER_SENDS_PER_MINUTE", default=600)
WS_ABUSE_CLOSE_AFTER = env.int("WS_ABUSE_CLOSE_AFTER", default=50)
# Group commit of WebSocket sends (conversations/groupcommit.py): at most this many sends per
# transaction, and this many transactions of a web process in flight at once.
SEND_BATCH_MAX = env.int("SEND_BATCH_MAX", default=256)
SEND_BATCHES_IN_FLIGHT = env.int("SEND_BATCHES_IN_FLIGHT", default=2)

# --- Media ---------------------------------------------------------------------------------------
_MB = 1024 * 1024
MEDIA_MAX_BYTES = {
    "image": env.int("MEDIA_MAX_IMAGE_MB", default=16) * _MB,
    "video": env.int("MEDIA_MAX_VIDEO_MB", default=100) * _MB,
    "audio": env.int("MEDIA_MAX_AUDIO_MB", default=32) * _MB,
    "file": env.int("MEDIA_MAX_FILE_MB", default=100) * _MB,
}
MEDIA_MAX_IMAGE_PIXELS = env.int("MEDIA_MAX_IMAGE_PIXELS", default=50_000_000)
# ffprobe/ffmpeg get this long per file; a file that keeps them busy longer stays a plain file.
MEDIA_FFMPEG_TIMEOUT_SECONDS = env.float("MEDIA_FFMPEG_TIMEOUT_SECONDS", default=60.0)
MEDIA_THUMBNAIL_SIZE = 320
MEDIA_MAX_PER_MESSAGE = 10
MEDIA_ORPHAN_SECONDS = env.int("MEDIA_ORPHAN_SECONDS", default=24 * 60 * 60)
MEDIA_URL_EXPIRY_SECONDS = env.int("MEDIA_URL_EXPIRY_SECONDS", default=300)
MEDIA_UPLOAD_URL_EXPIRY_SECONDS = env.int("MEDIA_UPLOAD_URL_EXPIRY_SECONDS", default=15 * 60)
# Types a browser may render inline from our origin; everything else is a download.
MEDIA_INLINE_TYPES = frozenset(
    {
        "image/jpeg", "image/png", "image/gif", "image/webp",
        "video/mp4", "video/webm", "audio/mpeg", "audio/ogg", "audio/mp4", "audio/webm", "audio/wav", "audio/x-wav",
    }
)  # fmt: skip
# Uploads larger than this go to a temporary file, not memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * _MB
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * _MB

CELERY_BEAT_SCHEDULE = {
    "delete-orphan-uploads": {"task": "media.tasks.delete_orphans_task", "schedule": 60 * 60},
}

# Queues get a prefix so that several deployments (or test runs) can share one broker.
CELERY_QUEUE_PREFIX = env.str("CELERY_QUEUE_PREFIX", default="")
_queues = celery_queue_settings(CELERY_QUEUE_PREFIX)
CELERY_TASK_DEFAULT_QUEUE = _queues["task_default_queue"]
CELERY_TASK_QUEUES = _queues["task_queues"]
CELERY_TASK_ROUTES = _queues["task_routes"]

# --- Push notifications (docs/architecture.md, "Push notifications"; docs/push.md) -------------
# VAPID key pair (base64url raw key as web-push tools print it, or PEM). Without one a pair
# is generated into VAR_DIR on first use; every process of a deployment must share it.
VAPID_PRIVATE_KEY = env.str("VAPID_PRIVATE_KEY", default="")
VAPID_PUBLIC_KEY = env.str("VAPID_PUBLIC_KEY", default="")
VAPID_SUBJECT = env.str("VAPID_SUBJECT", default="mailto:admin@localhost")
# Hosts (and their subdomains) that Web Push endpoints may point at: the worker POSTs there.
WEBPUSH_ENDPOINT_HOSTS = env.list(
    "WEBPUSH_ENDPOINT_HOSTS",
    default=["fcm.googleapis.com", "push.services.mozilla.com", "notify.windows.com", "push.apple.com"],
)
WEBPUSH_ALLOW_HTTP = env.bool("WEBPUSH_ALLOW_HTTP", default=False)
FCM_ENDPOINT = env.str("FCM_ENDPOINT", default="https://fcm.googleapis.com")
FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
FCM_ACCESS_TOKEN = env.str("FCM_ACCESS_TOKEN", default="")
# The service account key file from the Firebase console; FCM access tokens are minted from it.
FCM_SERVICE_ACCOUNT_FILE = env.str("FCM_SERVICE_ACCOUNT_FILE", default="")
APNS_ENDPOINT = env.str("APNS_ENDPOINT", default="https://api.push.apple.com")
APNS_TEAM_ID = env.str("APNS_TEAM_ID", default="")
APNS_KEY_ID = env.str("APNS_KEY_ID", default="")
APNS_PRIVATE_KEY = env.str("APNS_PRIVATE_KEY", default="")  # the .p8 key's PEM text, or its path
APNS_TOPIC = env.str("APNS_TOPIC", default="")  # the app's bundle id
PUSH_BACKENDS = {
    "webpush": "notifications.backends.webpush.WebPushBackend",
    "fcm": "notifications.backends.fcm.FCMBackend",
    "apns": "notifications.backends.apns.APNsBackend",
}
# Delays stay far below RabbitMQ's consumer timeout (30 minutes by default): a task waiting
# for its countdown is an unacknowledged message.
_PUSH_DELAY_MAX = 15 * 60
PUSH_COALESCE_SECONDS = min(env.float("PUSH_COALESCE_SECONDS", default=30.0), _PUSH_DELAY_MAX)
PUSH_TTL_SECONDS = env.int("PUSH_TTL_SECONDS", default=24 * 60 * 60)
PUSH_PREVIEW_CHARS = env.int("PUSH_PREVIEW_CHARS", default=120)
PUSH_HTTP_TIMEOUT_SECONDS = env.float("PUSH_HTTP_TIMEOUT_SECONDS", default=10.0)
PUSH_MAX_ATTEMPTS = env.int("PUSH_MAX_ATTEMPTS", default=6)
PUSH_RETRY_BASE_SECONDS = env.float("PUSH_RETRY_BASE_SECONDS", default=2.0)
PUSH_RETRY_MAX_SECONDS = min(env.float("PUSH_RETRY_MAX_SECONDS", default=300.0), _PUSH_DELAY_MAX)
PUSH_SWEEP_SECONDS = env.float("PUSH_SWEEP_SECONDS", default=60.0)
PUSH_OUTBOX_GRACE_SECONDS = env.float("PUSH_OUTBOX_GRACE_SECONDS", default=60.0)
PUSH_PUBLISH_BACKOFF_SECONDS = env.float("PUSH_PUBLISH_BACKOFF_SECONDS", default=5.0)
# The publisher gathers committed outbox ids this long before handing them to the broker as
# one task, so the worker decides them together (notifications/publisher.py).
PUSH_PUBLISH_LINGER_SECONDS = env.float("PUSH_PUBLISH_LINGER_SECONDS", default=0.05)
PUSH_DELIVERY_RETENTION_DAYS = env.int("PUSH_DELIVERY_RETENTION_DAYS", default=14)
CELERY_BEAT_SCHEDULE["push-sweep"] = {"task": "notifications.tasks.sweep_task", "schedule": PUSH_SWEEP_SECONDS}
CELERY_BEAT_SCHEDULE["push-purge"] = {"task": "notifications.tasks.purge_task", "schedule": 60 * 60}
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update(  # type: ignore[attr-defined]  # a dict literal above
    {
        "PushSubscriptionKindEnum": "notifications.models.PushSubscription.Kind",
        "PushDeliveryKindEnum": "notifications.models.PushDelivery.Kind",
        "PushDeliveryStatusEnum": "notifications.models.PushDelivery.Status",
        "PushDeliveryReasonEnum": "notifications.models.PushDelivery.Reason",
    }
)
