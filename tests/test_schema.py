"""The OpenAPI document at /api/schema/ and the docs page at /api/docs/."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

PUBLIC_OPERATIONS = {
    ("/api/v1/auth/register/", "post"),
    ("/api/v1/auth/token/", "post"),
    ("/api/v1/auth/token/refresh/", "post"),
    ("/api/v1/auth/logout/", "post"),
    ("/api/v1/me/", "get"),
    ("/api/v1/me/", "patch"),
    ("/api/v1/users/", "get"),
}
ANONYMOUS_OPERATIONS = {op for op in PUBLIC_OPERATIONS if op[0].startswith("/api/v1/auth/")}


@pytest.fixture
def schema(client) -> dict[str, Any]:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    document: dict[str, Any] = response.json()
    return document


def test_schema_is_a_valid_openapi_document(schema):
    validate(schema)

    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Chat API"


def test_schema_is_also_served_for_an_accept_header(client, schema):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    assert response.json() == schema


def test_schema_describes_every_public_operation(schema):
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}

    assert operations >= PUBLIC_OPERATIONS
    for path, method in PUBLIC_OPERATIONS:
        assert schema["paths"][path][method].get("responses"), (path, method)


def test_schema_declares_bearer_tokens_for_the_authenticated_operations(schema):
    schemes = schema["components"]["securitySchemes"]
    bearer = [name for name, scheme in schemes.items() if scheme.get("scheme") == "bearer"]

    assert bearer, schemes
    for path, method in PUBLIC_OPERATIONS - ANONYMOUS_OPERATIONS:
        security = schema["paths"][path][method]["security"]
        assert {bearer[0]: []} in security, (path, method, security)
        assert {} not in security, (path, method)
    for path, method in ANONYMOUS_OPERATIONS:
        assert {} in schema["paths"][path][method]["security"], (path, method)


def test_schema_never_exposes_a_password_in_a_response(schema):
    def properties(component: dict[str, Any]) -> set[str]:
        return set(component.get("properties", {}))

    components = schema["components"]["schemas"]
    register_in = components["RegisterRequest"]
    assert "password" in properties(register_in)
    for name, component in components.items():
        if not name.endswith("Request"):
            assert "password" not in properties(component), name


def test_docs_page_is_served_and_points_at_the_schema(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "/api/schema/" in response.content.decode()
