"""Liveness and readiness probes and ``manage.py check_services``, against the real services."""

from __future__ import annotations

import re
import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from chat_project.health import CHECK_TIMEOUT_SECONDS
from tests.conftest import free_port

SERVICES = {"database", "redis", "broker"}


def closed_redis_url() -> str:
    """A Redis URL on a loopback port nothing listens on (bound, then released)."""
    return f"redis://127.0.0.1:{free_port()}/0"


def closed_broker_url() -> str:
    return f"amqp://guest:guest@127.0.0.1:{free_port()}//"


def test_healthz_answers_without_touching_any_service(client):
    # No database mark: any query here would fail the test.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_every_service_ok(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ok", "down": [], "checks": dict.fromkeys(SERVICES, "ok")}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setting", "url", "service"),
    [
        pytest.param("REDIS_URL", closed_redis_url, "redis", id="redis"),
        pytest.param("CELERY_BROKER_URL", closed_broker_url, "broker", id="broker"),
    ],
)
def test_readyz_names_the_service_that_is_down(client, settings: Any, setting, url, service):
    setattr(settings, setting, url())

    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["down"] == [service]
    assert body["checks"][service].startswith("down: ")
    assert {name: state for name, state in body["checks"].items() if name != service} == dict.fromkeys(
        SERVICES - {service}, "ok"
    )
    # A refused connection is known at once; the probe must not sit on retries.
    assert elapsed < CHECK_TIMEOUT_SECONDS


@pytest.mark.django_db
def test_readyz_names_every_service_that_is_down(client, settings: Any):
    settings.REDIS_URL = closed_redis_url()
    settings.CELERY_BROKER_URL = closed_broker_url()

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["redis", "broker"]
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_check_services_passes_when_everything_answers():
    out = StringIO()

    call_command("check_services", stdout=out)

    lines = dict(line.split(None, 1) for line in out.getvalue().splitlines())
    assert lines == dict.fromkeys(SERVICES, "ok")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setting", "url", "service"),
    [
        pytest.param("REDIS_URL", closed_redis_url, "redis", id="redis"),
        pytest.param("CELERY_BROKER_URL", closed_broker_url, "broker", id="broker"),
    ],
)
def test_check_services_fails_naming_the_service_that_is_down(settings: Any, setting, url, service):
    setattr(settings, setting, url())
    out = StringIO()

    with pytest.raises(CommandError) as failure:
        call_command("check_services", stdout=out)

    named = re.search(r"down: ([^.]*)\.", str(failure.value))
    assert named is not None, str(failure.value)
    assert named.group(1).split(", ") == [service]
    lines = dict(line.split(None, 1) for line in out.getvalue().splitlines())
    assert lines[service].startswith("down: ")
