"""`make bench`: start the full stack as production would, seed it, run the workloads.

    python -m bench.run            # the quick suite (under 5 minutes)
    python -m bench.run --full     # everything, including the soak
    python -m bench.run --only W3  # one workload

Prints one JSON line per run and a table, and writes the suite's lines to
bench/results/latest.jsonl and a latency plot to bench/results/latency.png.
See docs/performance.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DB_NAME = os.environ.get("BENCH_DB", "chat_bench")
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def bench_env() -> dict[str, str]:
    """The full stack, with limits meant for abuse raised so they do not cap the measurement."""
    return {
        "DATABASE_URL": f"{PG}/{DB_NAME}",
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        "CHANNEL_LAYER_PREFIX": "bench",
        "CACHE_KEY_PREFIX": "bench",
        "CELERY_QUEUE_PREFIX": "bench-",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": os.environ.setdefault("BENCH_SECRET_KEY", secrets.token_urlsafe(48)),
        "JWT_ACCESS_SECONDS": "86400",
        "WS_SENDS_PER_SECOND": "100000",
        "WS_SEND_BURST": "100000",
        "WS_USER_SENDS_PER_MINUTE": "10000000",
        "LOG_LEVEL": "WARNING",
        "WEB_SERVER": os.environ.get("WEB_SERVER", "uvicorn"),
        "UVICORN_ARGS": "--no-access-log --log-level warning",
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# --- the stack ------------------------------------------------------------------------------------


def reset_database(env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()


@dataclass
class Web:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def cpu_seconds(self) -> float:
        proc = psutil.Process(self.process.pid)
        times = proc.cpu_times()
        return float(times.user + times.system)

    def rss_kb(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss // 1024)


@contextmanager
def web_processes(env: dict[str, str], count: int) -> Iterator[list[Web]]:
    webs: list[Web] = []
    try:
        for i in range(count):
            port = 8700 + i
            process = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "serve.sh")],
                cwd=ROOT,
                env={**os.environ, **env, "PORT": str(port), "VENV_BIN": str(Path(sys.executable).parent)},
            )
            webs.append(Web(port, process))
        for web in webs:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{web.port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or web.process.poll() is not None:
                    raise RuntimeError(f"web process on {web.port} did not start")
                time.sleep(0.2)
        yield webs
    finally:
        for web in webs:
            web.process.terminate()
        for web in webs:
            try:
                web.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                web.process.kill()


# --- seeding through the real database -------------------------------------------------------------


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


UNUSABLE = "!"  # Django's marker for "no password can match"


def seed_users(n: int, prefix: str) -> list[tuple[int, str]]:
    """Users with one device and an access token each. Passwords are unusable: hashing
    thousands of Argon2 passwords would take minutes and measures nothing we serve."""
    from accounts.models import Device, User
    from accounts.services import issue_tokens

    users = User.objects.bulk_create(
        [User(username=f"{prefix}{i}", display_name=f"Bench {i}", password=UNUSABLE) for i in range(n)], batch_size=1000
    )
    devices = Device.objects.bulk_create([Device(user=u, platform="other") for u in users], batch_size=1000)
    for device, user in zip(devices, users, strict=True):
        device.user = user
    return [(d.user_id, issue_tokens(device=d)["access"]) for d in devices]


def devices_for(users: list[tuple[int, str]], webs: list[Web]) -> list[Any]:
    from bench.load import Device

    return [Device(user_id, token, webs[i % len(webs)].ws_url) for i, (user_id, token) in enumerate(users)]


# --- workloads ---------------------------------------------------------------------------------------


def measure(webs: list[Web]) -> tuple[float, int]:
    return sum(w.cpu_seconds() for w in webs), sum(w.rss_kb() for w in webs)


def w1_idle(webs: list[Web], connections: int, procs: int) -> dict[str, Any]:
    import multiprocessing

    from bench.load import hold

    users = seed_users(connections, f"w1{uuid.uuid4().hex[:6]}_")
    devices = devices_for(users, webs)
    _, rss_before = measure(webs)
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()  # its events can be passed to pool workers
    ready = [manager.Event() for _ in range(procs)]
    release = manager.Event()
    with manager, ctx.Pool(procs) as pool:
        pending = [pool.apply_async(hold, (devices[i::procs], 600, ready[i], release)) for i in range(procs)]
        for event in ready:
            if not event.wait(timeout=600):
                raise RuntimeError("load generators did not open their connections")
        cpu0, _ = measure(webs)
        time.sleep(5)  # the idle interval being measured, not a synchronisation
        cpu1, rss_after = measure(webs)
        release.set()
        results = [p.get(timeout=120) for p in pending]
    opened = sum(r["opened"] for r in results)
    return {
        "workload": "W1",
        "params": {"connections": connections, "web_processes": len(webs)},
        "connections_open": opened,
        "alive_at_end": sum(r["alive_at_end"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "rss_kb_per_conn": round((rss_after - rss_before) / max(1, opened), 2),
        "idle_cpu_percent": round((cpu1 - cpu0) / 5 * 100, 2),
    }


def w2_storm(webs: list[Web], connections: int, rate: float, procs: int) -> dict[str, Any]:
    from bench.load import run_in_processes, storm

    users = seed_users(connections, f"w2{uuid.uuid4().hex[:6]}_")
    devices = devices_for(users, webs)
    cpu0, _ = measure(webs)
    results = run_in_processes(storm, [(devices[i::procs], rate / procs) for i in range(procs)])
    cpu1, _ = measure(webs)
    handshakes = [h for r in results for h in r["handshake_ms"]]
    elapsed = max(r["elapsed"] for r in results)
    return {
        "workload": "W2",
        "params": {"connections": connections, "offered_per_s": rate},
        "connects_per_s": round(len(handshakes) / elapsed, 1),
        "p50_ms": percentile(handshakes, 0.5),
        "p99_ms": percentile(handshakes, 0.99),
        "errors": sum(r["errors"] for r in results),
        "server_cpu_s": round(cpu1 - cpu0, 2),
    }


def _chat_result(
    workload: str, params: dict[str, Any], results: list[dict[str, Any]], cpu: float, tag: str, seconds: float,
    fanout: int,
) -> dict[str, Any]:  # fmt: skip
    from conversations.models import Message

    acked = [tuple(a) for r in results for a in r["acked"]]
    stored = Message.objects.filter(client_msg_id__startswith=f"{tag}-").count()
    e2e = [x for r in results for x in r["e2e_ms"]]
    delivered = sum(r["delivered"] for r in results)
    sent = params["messages"]
    return {
        "workload": workload,
        "params": params,
        "msgs_per_s": round(len(acked) / seconds, 1),
        "deliveries_per_s": round(delivered / seconds, 1),
        "p50_ms": percentile(e2e, 0.5),
        "p99_ms": percentile(e2e, 0.99),
        "ack_p99_ms": percentile([x for r in results for x in r["ack_ms"]], 0.99),
        "lost": (sent - stored) + max(0, sent * fanout - delivered),
        "duplicates": (len(acked) - len(set(acked))) + sum(r["duplicates"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "server_cpu_s_per_1k_msgs": round(cpu / max(1, len(acked)) * 1000, 3),
    }


def w3_direct(webs: list[Web], pairs: int, rate: float, seconds: float, procs: int) -> dict[str, Any]:
    from bench.load import Plan, chat, run_in_processes
    from conversations.services import get_or_create_direct

    tag = f"w3{uuid.uuid4().hex[:6]}"
    users = seed_users(pairs * 2, f"{tag}_")
    devices = devices_for(users, webs)
    from accounts.models import User

    by_id = User.objects.in_bulk([u for u, _ in users])
    per_pair = max(1, int(rate * seconds / pairs))
    interval = pairs / rate
    conversations = [
        get_or_create_direct(user=by_id[users[2 * i][0]], other_user_id=users[2 * i + 1][0])[0].pk for i in range(pairs)
    ]
    start_at = time.time() + 3
    jobs = []
    for p in range(procs):
        idx = list(range(p, pairs, procs))
        plan = Plan(
            senders=[(devices[2 * i], conversations[i], per_pair) for i in idx],
            receivers=[(devices[2 * i + 1], per_pair) for i in idx],
            interval=interval,
            start_at=start_at,
            tag=tag,
        )
        jobs.append((plan,))
    cpu0, _ = measure(webs)
    results = run_in_processes(chat, jobs)
    cpu1, _ = measure(webs)
    params = {"pairs": pairs, "offered_msgs_per_s": rate, "messages": per_pair * pairs, "web_processes": len(webs)}
    return _chat_result("W3", params, results, cpu1 - cpu0, tag, per_pair * interval, fanout=1)


def w4_group(webs: list[Web], members: int, rate: float, seconds: float, procs: int) -> dict[str, Any]:
    from accounts.models import User
    from bench.load import Plan, chat, run_in_processes
    from conversations.models import Conversation, Membership

    tag = f"w4{uuid.uuid4().hex[:6]}"
    users = seed_users(members, f"{tag}_")
    devices = devices_for(users, webs)
    owner = User.objects.get(pk=users[0][0])
    group = Conversation.objects.create(kind="group", title=f"Bench {members}", created_by=owner)
    Membership.objects.bulk_create(
        [
            Membership(conversation=group, user_id=u, role="owner" if i == 0 else "member")
            for i, (u, _) in enumerate(users)
        ]
    )
    count = max(1, int(rate * seconds))
    start_at = time.time() + 3
    receivers = devices[1:]
    jobs = []
    for p in range(procs):
        plan = Plan(
            senders=[(devices[0], group.pk, count)] if p == 0 else [],
            receivers=[(d, count) for d in receivers[p::procs]],
            interval=1 / rate,
            start_at=start_at,
            tag=tag,
        )
        jobs.append((plan,))
    cpu0, _ = measure(webs)
    results = run_in_processes(chat, jobs)
    cpu1, _ = measure(webs)
    params = {"members": members, "offered_msgs_per_s": rate, "messages": count, "web_processes": len(webs)}
    return _chat_result("W4", params, results, cpu1 - cpu0, tag, count / rate, fanout=members - 1)


def w5_sync(webs: list[Web], conversations: int, messages: int) -> dict[str, Any]:
    from django.db import transaction
    from django.utils import timezone

    from bench.load import resync, run_in_processes
    from conversations.models import Conversation, Membership, Message

    tag = f"w5{uuid.uuid4().hex[:6]}"
    users = seed_users(2, f"{tag}_")
    me, peer = users[0][0], users[1][0]
    per = messages // conversations
    now = timezone.now()
    with transaction.atomic():
        convs = Conversation.objects.bulk_create(
            [
                Conversation(kind="direct", direct_key=f"{tag}:{i}", last_seq=per, version=per)
                for i in range(conversations)
            ]
        )
        Membership.objects.bulk_create(
            [Membership(conversation=c, user_id=u) for c in convs for u in (me, peer)], batch_size=2000
        )
        Message.objects.bulk_create(
            [
                Message(
                    conversation=c,
                    seq=s,
                    version=s,
                    sender_id=peer,
                    client_msg_id=f"{tag}-{c.pk}-{s}",
                    body=f"message {s} of a long absence",
                    created_at=now,
                )
                for c in convs
                for s in range(1, per + 1)
            ],
            batch_size=5000,
        )
    device = devices_for(users[:1], webs)[0]
    cpu0, _ = measure(webs)
    (result,) = run_in_processes(resync, [(device, {str(c.pk): 0 for c in convs})])
    cpu1, _ = measure(webs)
    return {
        "workload": "W5",
        "params": {"conversations": conversations, "messages": messages},
        "seconds_to_sync_done": round(result["seconds"], 3),
        "msgs_per_s": round(result["messages"] / result["seconds"], 1),
        "lost": messages - result["messages"],
        "duplicates": 0,
        "errors": 0,
        "server_cpu_s_per_1k_msgs": round((cpu1 - cpu0) / max(1, result["messages"]) * 1000, 3),
    }


# --- the suite -------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    import channels
    import django

    return {
        "git": revision.stdout.strip(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "channels": channels.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "web_server": os.environ.get("WEB_SERVER", "uvicorn"),
        "layer": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }


def table(lines: list[dict[str, Any]]) -> str:
    cols = ["workload", "msgs_per_s", "deliveries_per_s", "p50_ms", "p99_ms", "lost", "duplicates", "errors"]
    extra = ["rss_kb_per_conn", "connects_per_s", "seconds_to_sync_done", "server_cpu_s_per_1k_msgs"]
    rows = [[*cols, "other", "params"]]
    for line in lines:
        other = ", ".join(f"{k}={line[k]}" for k in extra if k in line)
        rows.append([str(line.get(c, "")) for c in cols] + [other, json.dumps(line["params"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def plot(lines: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, workload, x_key in ((axes[0], "W3", "offered_msgs_per_s"), (axes[1], "W4", "members")):
        runs = sorted((x for x in lines if x["workload"] == workload), key=lambda x: x["params"][x_key])
        xs = [r["params"][x_key] for r in runs]
        for q in ("p50_ms", "p99_ms"):
            ax.plot(xs, [r[q] or 0 for r in runs], marker="o", label=q)
        ax.set_title(f"{workload}: latency against {'offered load' if workload == 'W3' else 'group size'}")
        ax.set_xlabel(x_key)
        ax.set_ylabel("ms")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "latency.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--full", action="store_true", help="the whole suite (longer)")
    parser.add_argument("--only", help="one workload, e.g. W3")
    parser.add_argument("--web", type=int, default=int(os.environ.get("BENCH_WEB_PROCESSES", "2")))
    args = parser.parse_args()
    env = bench_env()
    reset_database(env)
    setup_django(env)
    procs = 2
    quick: list[tuple[str, Any]] = [
        ("W1", lambda w: w1_idle(w, 2000, procs)),
        ("W2", lambda w: w2_storm(w, 1000, 500, procs)),
        ("W3", lambda w: w3_direct(w, 100, 250, 10, procs)),
        ("W3", lambda w: w3_direct(w, 100, 500, 10, procs)),
        ("W3", lambda w: w3_direct(w, 100, 1000, 10, procs)),
        ("W4", lambda w: w4_group(w, 10, 50, 10, procs)),
        ("W4", lambda w: w4_group(w, 100, 20, 10, procs)),
        ("W4", lambda w: w4_group(w, 1000, 5, 10, procs)),
        ("W5", lambda w: w5_sync(w, 100, 10_000)),
    ]
    full: list[tuple[str, Any]] = [
        ("W1", lambda w: w1_idle(w, 10_000, 4)),
        ("W2", lambda w: w2_storm(w, 5000, 1000, 4)),
        ("W3", lambda w: w3_direct(w, 500, 2500, 20, procs)),
        ("W4", lambda w: w4_group(w, 1000, 25, 20, procs)),
    ]
    suite = quick + (full if args.full else [])
    if args.only:
        suite = [s for s in suite if s[0] == args.only.upper()][: int(os.environ.get("BENCH_ONLY_FIRST", "99"))]
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines: list[dict[str, Any]] = []
    meta = environment()
    with web_processes(env, args.web) as webs:
        for _name, run in suite:
            line = {**run(webs), "env": meta}
            print(json.dumps(line), flush=True)
            lines.append(line)
    (RESULTS / "latest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    print()
    print(table(lines))
    if any(x["workload"] in ("W3", "W4") for x in lines):
        plot(lines)
        print(f"\nplot: {RESULTS / 'latency.png'}")


if __name__ == "__main__":
    main()
