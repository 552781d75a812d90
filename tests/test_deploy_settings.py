"""Production settings: ``check --deploy`` passes, and the embedded secret key is kept safely.

Each test starts a fresh Python process, since settings are read once at start.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

HTTPS_WARNINGS = {"security.W004", "security.W008", "security.W012", "security.W016"}
# Variables that would switch services on, or otherwise leak this test run into the child.
_SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "REDIS_SHARD_URLS", "CELERY_BROKER_URL", "AWS_STORAGE_BUCKET_NAME")


def production_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The embedded default in production mode: no services, nothing from the outer run."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in _SERVICE_VARIABLES and not name.startswith(("DJANGO_", "PYTEST_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="chat_project.settings",
        DJANGO_DEBUG="0",
        DJANGO_ALLOWED_HOSTS="chat.example.com",
        VAR_DIR=str(var_dir),
    )
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def secret_key() -> str:
    key = secrets.token_urlsafe(48)  # 64 characters
    assert len(key) >= 50
    return key


def warning_ids(output: str) -> set[str]:
    return set(re.findall(r"\(([a-z_]+\.[WE]\d{3})\)", output))


def test_deploy_check_passes_with_https(tmp_path):
    env = production_env(tmp_path, DJANGO_SECRET_KEY=secret_key(), DJANGO_SECURE_HTTPS="1")

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode == 0, result.stderr + result.stdout
    assert warning_ids(result.stderr + result.stdout) == set()
    # A key from the environment is used as is: nothing is written next to the data.
    assert not (tmp_path / "secret_key").exists()


def test_without_https_only_the_https_warnings_remain(tmp_path):
    env = production_env(tmp_path, DJANGO_SECRET_KEY=secret_key(), DJANGO_SECURE_HTTPS="0")

    result = run(["manage.py", "check", "--deploy"], env)

    assert result.returncode == 0, result.stderr + result.stdout
    assert warning_ids(result.stderr + result.stdout) == HTTPS_WARNINGS


def test_a_weak_secret_key_fails_the_deploy_check(tmp_path):
    env = production_env(tmp_path, DJANGO_SECRET_KEY="too-short", DJANGO_SECURE_HTTPS="1")

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)

    assert result.returncode != 0
    assert "security.W009" in warning_ids(result.stderr + result.stdout)


def test_without_a_secret_key_one_is_generated_privately_and_reused(tmp_path):
    env = production_env(tmp_path)
    read_key = ["-c", "from django.conf import settings; print(settings.SECRET_KEY)"]

    first = run(read_key, env)
    key_file = tmp_path / "secret_key"
    mode = stat.S_IMODE(key_file.stat().st_mode) if key_file.exists() else None
    second = run(read_key, env)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert mode == 0o600
    key = first.stdout.strip()
    assert len(key) >= 50
    assert key == key_file.read_text().strip()
    assert second.stdout.strip() == key
    # Another data directory gets a key of its own.
    other = run(read_key, production_env(tmp_path / "other"))
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() not in ("", key)
