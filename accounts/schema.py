"""OpenAPI description of our own authentication class (drf-spectacular extension).

drf-spectacular knows simplejwt's ``JWTAuthentication`` but not subclasses of it; without
this the schema has no bearer scheme and ``check --deploy`` warns (drf_spectacular.W001).
Imported from ``AccountsConfig.ready`` so it is registered before any schema is built.
"""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class DeviceJWTScheme(SimpleJWTScheme):  # type: ignore[no-untyped-call]  # its __init_subclass__ registers the class, untyped
    """``Authorization: Bearer <access>``, the same header simplejwt's own class reads."""

    target_class = "accounts.authentication.DeviceJWTAuthentication"
    name = "jwtAuth"
