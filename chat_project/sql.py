"""Small helpers for the few statements written in SQL rather than the ORM (the send path)."""

from __future__ import annotations

from collections.abc import Sized


def placeholders(values: Sized) -> str:
    """``%s, %s, ...``: one placeholder per value, for an ``IN (...)`` list."""
    return ", ".join(["%s"] * len(values))
