"""Liveness and readiness probes, and the service checks behind them.

``/healthz`` answers as long as the process serves requests. ``/readyz`` checks every
service the configuration names (database, Redis, broker) and answers 503 naming the ones
that are down. ``manage.py check_services`` runs the same checks before a full-stack start.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from chat_project.redis_client import shard_label

CHECK_TIMEOUT_SECONDS = 2


def check_database() -> str:
    """Run one query against the default database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def check_redis() -> str:
    """PING the cache's Redis and every shard; the embedded default has none to check.

    Down (an exception) when the cache's Redis or every shard is down. One shard down of
    several is *degraded*, not down: the process still serves everyone, only live delivery
    of that shard's users waits for it (docs/operations.md, "Redis shards"), and taking
    every web process out of the balancer for it would be worse.
    """
    shards = list(settings.REDIS_SHARD_URLS)
    cache_url = settings.REDIS_URL or (shards[0] if shards else "")
    if not cache_url:
        return "not configured"
    _ping(cache_url)
    if shards == [cache_url]:
        return "ok"
    down: list[str] = []
    for index, url in enumerate(shards):
        try:
            _ping(url)
        except Exception as exc:  # any failure means "down"
            down.append(f"{shard_label(url, index)}: {type(exc).__name__}: {exc}")
    if len(down) == len(shards):
        raise ConnectionError("every Redis shard is down: " + "; ".join(down))
    return "degraded: " + "; ".join(down) if down else "ok"


def _ping(url: str) -> None:
    import redis

    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def check_broker() -> str:
    """Open (and close) a connection to the configured Celery broker: one attempt, no retry.

    kombu's ``ensure_connection`` sleeps two seconds before each retry, so ``max_retries=1``
    made a probe of a down broker take 2 s or more; the caller (an orchestrator, or
    ``check_services``) is the one that retries.
    """
    if not settings.CELERY_BROKER_URL:
        return "not configured"
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
        conn.ensure_connection(max_retries=0, timeout=CHECK_TIMEOUT_SECONDS)
    return "ok"


SERVICE_CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
}


def run_checks() -> tuple[dict[str, str], list[str]]:
    """Run every service check; return each one's state and the names of those down."""
    results: dict[str, str] = {}
    down: list[str] = []
    for name, check in SERVICE_CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:  # any failure of a dependency means "down"
            results[name] = f"down: {type(exc).__name__}: {exc}"
            down.append(name)
    return results, down


def healthz(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready: every configured service answers; 503 names those that do not."""
    results, down = run_checks()
    if down:
        return JsonResponse({"status": "unavailable", "down": down, "checks": results}, status=503)
    return JsonResponse({"status": "ok", "down": [], "checks": results})
