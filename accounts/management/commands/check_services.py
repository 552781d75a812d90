"""Fail fast, with a clear message, when a configured service is down."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat_project.health import run_checks


class Command(BaseCommand):
    help = "Check that the database, Redis and the broker named by the environment answer."

    def handle(self, *args: Any, **options: Any) -> None:
        results, down = run_checks()
        for name, state in results.items():
            self.stdout.write(f"{name:<9} {state}")
        if down:
            raise CommandError(f"Service(s) down: {', '.join(down)}. Check the environment variables in README.md.")
