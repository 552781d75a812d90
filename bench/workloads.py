"""The workloads W1..W7: seed through the real services, drive load (bench/load.py), check
in PostgreSQL, and return one result line each (docs/performance.md says what each field means)."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bench.stack import (
    PushEndpoint,
    Server,
    Worker,
    percentile,
    redis_keys,
    redis_leftovers,
    webpush_subscription,
)

# --- seeding through the real database -------------------------------------------------------------

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


def devices_for(users: list[tuple[int, str]], urls: list[str]) -> list[Any]:
    from bench.load import Device

    return [Device(user_id, token, urls[i % len(urls)]) for i, (user_id, token) in enumerate(users)]


def direct_chats(users: list[tuple[int, str]]) -> list[int]:
    """One direct conversation per pair of consecutive users (the real service)."""
    from accounts.models import User
    from conversations.services import get_or_create_direct

    by_id = User.objects.in_bulk([u for u, _ in users])
    return [
        get_or_create_direct(user=by_id[users[i][0]], other_user_id=users[i + 1][0])[0].pk
        for i in range(0, len(users) - 1, 2)
    ]


# --- measuring a chat run ---------------------------------------------------------------------------


@dataclass
class Meter:
    """Server CPU (web processes, nginx) and worker CPU between ``start`` and ``stop``."""

    server: Server
    worker: Worker | None
    cpu0: float = 0.0
    worker0: float = 0.0
    cpu: float = 0.0
    worker_cpu: float = 0.0

    def start(self, _at: float = 0.0) -> None:
        self.cpu0 = self.server.cpu_seconds()
        self.worker0 = self.worker.cpu_seconds() if self.worker else 0.0

    def stop(self) -> None:
        self.cpu = self.server.cpu_seconds() - self.cpu0
        self.worker_cpu = (self.worker.cpu_seconds() - self.worker0) if self.worker else 0.0


def _merge_arrivals(results: list[dict[str, Any]]) -> dict[int, list[float]]:
    merged: dict[int, list[float]] = {}
    for r in results:
        for key, slowest, count in zip(r["arrival_keys"], r["arrival_max_ms"], r["arrival_count"], strict=True):
            slot = merged.get(key)
            if slot is None:
                merged[key] = [slowest, count]
            else:
                slot[0] = max(slot[0], slowest)
                slot[1] += count
    return merged


def stored_messages(tag: str) -> tuple[set[int], int]:
    """This run's messages in PostgreSQL (keys as bench.load.message_key), and how many rows
    repeat a (sender, conversation, client_msg_id): stored twice."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (conversation_id::bigint << 32) | seq FROM conversations_message WHERE client_msg_id LIKE %s",
            [f"{tag}-%"],
        )
        keys = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT count(*) - count(DISTINCT (sender_id, conversation_id, client_msg_id)) "
            "FROM conversations_message WHERE client_msg_id LIKE %s",
            [f"{tag}-%"],
        )
        (repeated,) = cursor.fetchone() or (0,)
    return set(keys), int(repeated)


def chat_line(
    workload: str,
    params: dict[str, Any],
    *,
    tag: str,
    start_at: float,
    results: list[dict[str, Any]],
    meter: Meter,
    fanout: int,
    nominal_seconds: float,
) -> dict[str, Any]:
    """One result line for an open-loop chat run, checked against PostgreSQL.

    - ``lost``: acked messages that are not in PostgreSQL (a broken promise);
    - ``undelivered``: deliveries of stored messages that had not reached their receivers
      when the drain ended (lagging or lost live delivery: the run does not wait longer);
    - ``not_sent`` / ``unacked``: offered messages given up before sending / sent and not
      acked within the drain (the server fell behind);
    - ``duplicates``: a message stored twice, a live event received twice by one socket, or
      a retried send acked as a different message.
    """
    stored, repeated = stored_messages(tag)
    acked = [k for r in results for k in r["acked"]]
    acked_set = set(acked)
    delivered = sum(r["delivered"] for r in results)
    e2e = [x for r in results for x in r["e2e_ms"]]
    acks = [x for r in results for values in r["ack_ms"].values() for x in values]
    last_ack = max((r["last_ack_at"] for r in results), default=0.0)
    last_arrival = max((r["last_arrival_at"] for r in results), default=0.0)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    line: dict[str, Any] = {
        "workload": workload,
        "params": params,
        "msgs_per_s": round(len(acked_set) / max(nominal_seconds, last_ack - start_at, 1e-9), 1),
        "deliveries_per_s": round(delivered / max(nominal_seconds, last_arrival - start_at, 1e-9), 1),
        "p50_ms": percentile(e2e, 0.5),
        "p99_ms": percentile(e2e, 0.99),
        "ack_p50_ms": percentile(acks, 0.5),
        "ack_p99_ms": percentile(acks, 0.99),
        "lost": len(acked_set - stored),
        "undelivered": max(0, fanout * len(stored) - delivered),
        "duplicates": repeated + sum(r["duplicates"] for r in results) + (len(acked) - len(acked_set)),
        "errors": sum(errors.values()),
        "offered": sum(r["offered"] for r in results),
        "not_sent": sum(r["not_sent"] for r in results),
        "unacked": sum(r["unacked"] for r in results),
        "stored": len(stored),
        "server_cpu_s_per_1k_msgs": round(meter.cpu / max(1, len(acked_set)) * 1000, 3),
    }
    if meter.worker is not None:
        line["worker_cpu_s_per_1k_msgs"] = round(meter.worker_cpu / max(1, len(acked_set)) * 1000, 3)
    if errors:
        line["error_kinds"] = dict(errors)
    if fanout > 1:  # per message, until the slowest member had it
        merged = _merge_arrivals(results)
        complete = [slot[0] for key, slot in merged.items() if slot[1] >= fanout and key in stored]
        line["delivery_p50_ms"], line["delivery_p99_ms"] = line["p50_ms"], line["p99_ms"]
        line["p50_ms"], line["p99_ms"] = percentile(complete, 0.5), percentile(complete, 0.99)
        line["messages_not_at_every_member"] = len(stored) - len(complete)
        line["members_missing_messages"] = sum(r["short_receivers"] for r in results)
    return line


def _split(items: list[Any], procs: int) -> list[list[Any]]:
    return [items[p::procs] for p in range(procs)]


# --- W1, W2: connections ---------------------------------------------------------------------------


def w1_idle(server: Server, connections: int, procs: int) -> dict[str, Any]:
    from bench.load import hold

    users = seed_users(connections, f"w1{uuid.uuid4().hex[:6]}_")
    devices = devices_for(users, server.ws_urls)
    rss_before = server.rss_kb()
    ctx = multiprocessing.get_context("spawn")
    manager = ctx.Manager()  # its events can be passed to pool workers
    ready = [manager.Event() for _ in range(procs)]
    release = manager.Event()
    with manager, ctx.Pool(procs) as pool:
        pending = [pool.apply_async(hold, (devices[i::procs], 600, ready[i], release)) for i in range(procs)]
        for event in ready:
            if not event.wait(timeout=600):
                raise RuntimeError("load generators did not open their connections")
        cpu0 = server.cpu_seconds()
        time.sleep(5)  # the idle interval being measured, not a synchronisation
        cpu1, rss_after = server.cpu_seconds(), server.rss_kb()
        release.set()
        results = [p.get(timeout=120) for p in pending]
    opened = sum(r["opened"] for r in results)
    return {
        "workload": "W1",
        "params": {"connections": connections, **server.params()},
        "connections_open": opened,
        "alive_at_end": sum(r["alive_at_end"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "rss_kb_per_conn": round((rss_after - rss_before) / max(1, opened), 2),
        "idle_cpu_percent": round((cpu1 - cpu0) / 5 * 100, 2),
    }


def w2_storm(server: Server, connections: int, rate: float, procs: int) -> dict[str, Any]:
    from bench.load import run_in_processes, storm

    users = seed_users(connections, f"w2{uuid.uuid4().hex[:6]}_")
    devices = devices_for(users, server.ws_urls)
    cpu0 = server.cpu_seconds()
    results = run_in_processes(storm, [(devices[i::procs], rate / procs) for i in range(procs)])
    cpu1 = server.cpu_seconds()
    handshakes = [h for r in results for h in r["handshake_ms"]]
    elapsed = max(r["elapsed"] for r in results)
    return {
        "workload": "W2",
        "params": {"connections": connections, "offered_per_s": rate, **server.params()},
        "connects_per_s": round(len(handshakes) / elapsed, 1),
        "p50_ms": percentile(handshakes, 0.5),
        "p99_ms": percentile(handshakes, 0.99),
        "errors": sum(r["errors"] for r in results),
        "server_cpu_s": round(cpu1 - cpu0, 2),
    }


# --- W3: 1:1 chat ------------------------------------------------------------------------------------


@dataclass
class Chat:
    """Options shared by the chat workloads."""

    procs: int = 2
    drain: float = 15.0
    grace: float = 3.0
    extra: dict[str, Any] = field(default_factory=dict)


def _pairs_plans(
    devices: list[Any],
    conversations: list[int],
    per_pair: int,
    interval: float,
    tag: str,
    procs: int,
    *,
    online: Callable[[int], bool] = lambda i: True,
    label: Callable[[int], str] = lambda i: "all",
) -> list[Any]:
    """Pair i: device 2i sends into conversation i, device 2i+1 receives (when ``online``).
    Senders are spread evenly over one interval, across every process."""
    from bench.load import Plan, Send

    pairs = len(conversations)
    plans = []
    for idx in _split(list(range(pairs)), procs):
        plans.append(
            Plan(
                senders=[
                    Send(devices[2 * i], conversations[i], per_pair, offset=i * interval / pairs, label=label(i))
                    for i in idx
                ],
                receivers=[(devices[2 * i + 1], per_pair) for i in idx if online(i)],
                interval=interval,
                tag=tag,
            )
        )
    return plans


def _direct_chat_plans(
    server: Server, tag: str, pairs: int, rate: float, seconds: float, opts: Chat
) -> tuple[list[Any], int, float]:
    """Seeded pairs of users in direct chats, each pair sending at ``rate / pairs`` for
    ``seconds``, split over the load generator's processes (W3, W7); with the messages per
    pair and the interval between a pair's messages."""
    users = seed_users(pairs * 2, f"{tag}_")
    devices = devices_for(users, server.ws_urls)
    conversations = direct_chats(users)
    per_pair, interval = max(1, int(rate * seconds / pairs)), pairs / rate
    plans = _pairs_plans(devices, conversations, per_pair, interval, tag, opts.procs)
    for plan in plans:
        plan.drain, plan.grace = opts.drain, opts.grace
    return plans, per_pair, interval


def w3_direct(
    server: Server, worker: Worker | None, pairs: int, rate: float, seconds: float, opts: Chat
) -> dict[str, Any]:
    from bench.load import run_chat

    tag = f"w3{uuid.uuid4().hex[:6]}"
    plans, per_pair, interval = _direct_chat_plans(server, tag, pairs, rate, seconds, opts)
    meter = Meter(server, worker)
    start_at, results = run_chat(plans, on_start=meter.start)
    meter.stop()
    params = {"pairs": pairs, "offered_msgs_per_s": rate, "messages": per_pair * pairs, **server.params()}
    return chat_line(
        "W3", params, tag=tag, start_at=start_at, results=results, meter=meter, fanout=1,
        nominal_seconds=per_pair * interval,
    )  # fmt: skip


# --- W4: group fan-out -------------------------------------------------------------------------------


def w4_group(
    server: Server, worker: Worker | None, members: int, rate: float, seconds: float, opts: Chat, senders: int = 10
) -> dict[str, Any]:
    """A group of ``members`` online members, one socket each, spread over the load-generator
    processes. ``senders`` of them (one socket carries a member's sends and receipts, as
    in an app: the server works one socket's frames in order) share the offered rate; every
    message must reach the other ``members - 1``."""
    from accounts.models import User
    from bench.load import Plan, Send, run_chat
    from conversations.services import create_group

    tag = f"w4{uuid.uuid4().hex[:6]}"
    users = seed_users(members, f"{tag}_")
    devices = devices_for(users, server.ws_urls)
    owner = User.objects.get(pk=users[0][0])
    group = create_group(creator=owner, title=f"Bench {members}", member_ids=[u for u, _ in users[1:]])
    senders = max(1, min(senders, members - 1))
    total = max(senders, int(rate * seconds))
    each = total // senders
    total = each * senders
    interval = senders / rate
    procs = max(opts.procs, min(4, members // 250))
    plans = []
    for indexes in _split(list(range(members)), procs):
        plans.append(
            Plan(
                senders=[
                    Send(devices[i], group.pk, each, offset=i / rate, receives=total - each)
                    for i in indexes
                    if i < senders
                ],
                receivers=[(devices[i], total) for i in indexes if i >= senders],
                interval=interval,
                tag=tag,
                grace=opts.grace,
                drain=opts.drain,
                keep_arrivals=True,
            )
        )
    meter = Meter(server, worker)
    start_at, results = run_chat(plans, on_start=meter.start)
    meter.stop()
    params = {
        "members": members,
        "senders": senders,
        "offered_msgs_per_s": rate,
        "offered_deliveries_per_s": rate * (members - 1),
        "messages": total,
        **server.params(),
    }
    return chat_line(
        "W4", params, tag=tag, start_at=start_at, results=results, meter=meter, fanout=members - 1,
        nominal_seconds=total / rate,
    )  # fmt: skip


# --- W5: reconnect sync ------------------------------------------------------------------------------


def w5_sync(server: Server, conversations: int, messages: int) -> dict[str, Any]:
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
    device = devices_for(users[:1], server.ws_urls)[0]
    cpu0 = server.cpu_seconds()
    (result,) = run_in_processes(resync, [(device, {str(c.pk): 0 for c in convs})])
    cpu1 = server.cpu_seconds()
    return {
        "workload": "W5",
        "params": {"conversations": conversations, "messages": messages, **server.params()},
        "seconds_to_sync_done": round(result["seconds"], 3),
        "msgs_per_s": round(result["messages"] / result["seconds"], 1),
        "lost": messages - result["messages"],
        "duplicates": 0,
        "errors": 0,
        "server_cpu_s_per_1k_msgs": round((cpu1 - cpu0) / max(1, result["messages"]) * 1000, 3),
    }


# --- W6: the push path -------------------------------------------------------------------------------


def _seconds_after(start_at: float, moment: datetime | None) -> float:
    return moment.timestamp() - start_at if moment is not None else 0.0


def w6_push(
    server: Server,
    worker: Worker,
    endpoint: PushEndpoint,
    pairs: int,
    rate: float,
    seconds: float,
    opts: Chat,
    push_drain: float = 30.0,
) -> dict[str, Any]:
    """W3's 1:1 chats, but the receivers of every other pair are offline, each with a Web Push
    subscription (registered over the REST API) whose push service is ``endpoint``.

    The cost added to the send path: the same run's ack latency of sends to offline
    recipients against sends to online ones (same moment, same load). The push pipeline:
    decisions and pushes per second and their latency, from PushDelivery rows.
    """
    from django.db.models import Max

    from bench.load import run_chat
    from conversations.models import Message
    from notifications.models import PushDelivery, PushOutbox

    tag = f"w6{uuid.uuid4().hex[:6]}"
    users = seed_users(pairs * 2, f"{tag}_")
    devices = devices_for(users, server.ws_urls)
    conversations = direct_chats(users)
    offline = set(range(1, pairs, 2))
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        for i in sorted(offline):
            user_id, token = users[2 * i + 1]
            response = http.post(
                "/api/v1/push/subscriptions/",
                json=webpush_subscription(endpoint.url(f"/wp/{user_id}")),
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code != 201:
                raise RuntimeError(f"push subscription refused: {response.status_code} {response.text[:300]}")
    per_pair = max(1, int(rate * seconds / pairs))
    interval = pairs / rate
    plans = _pairs_plans(
        devices, conversations, per_pair, interval, tag, opts.procs,
        online=lambda i: i not in offline, label=lambda i: "offline" if i in offline else "online",
    )  # fmt: skip
    for plan in plans:
        plan.drain, plan.grace = opts.drain, opts.grace
    received0 = endpoint.received
    meter = Meter(server, worker)
    start_at, results = run_chat(plans, on_start=meter.start)
    meter.stop()
    offer_seconds = per_pair * interval

    # The pushes of this run settle (accepted, failed, ...) or the bounded wait ends.
    ours = PushDelivery.objects.filter(message__client_msg_id__startswith=f"{tag}-")
    deadline = time.monotonic() + push_drain
    while time.monotonic() < deadline:
        outbox = PushOutbox.objects.filter(message__client_msg_id__startswith=f"{tag}-").exists()
        if not outbox and not ours.exclude(status__in=PushDelivery.FINAL).exists():
            break
        time.sleep(0.5)
    worker_cpu = worker.cpu_seconds() - meter.worker0

    offline_conversations = [conversations[i] for i in offline]
    offline_messages = Message.objects.filter(
        client_msg_id__startswith=f"{tag}-", conversation_id__in=offline_conversations
    ).count()
    by_status = Counter(f"{s}:{r}" if r else s for s, r in ours.values_list("status", "reason"))
    Status, Reason = PushDelivery.Status, PushDelivery.Reason
    pushed = ours.exclude(status=Status.SUPPRESSED)
    accepted = list(ours.filter(status=Status.ACCEPTED).values_list("accepted_at", "message__created_at"))
    # A message whose decision found a push of its conversation still waiting rides on that one.
    carried = ours.filter(reason=Reason.COALESCED, coalesced_into__status=Status.ACCEPTED).count()
    decided_last = ours.aggregate(last=Max("created_at"))["last"]
    accepted_last = max((a for a, _ in accepted if a is not None), default=None)
    push_ms = [(a - m).total_seconds() * 1000 for a, m in accepted if a is not None]
    n_pushed, n_decided = pushed.count(), ours.count()

    line = chat_line(
        "W6",
        {
            "pairs": pairs,
            "offline_pairs": len(offline),
            "offered_msgs_per_s": rate,
            "messages": per_pair * pairs,
            "push_coalesce_seconds": float(_setting("PUSH_COALESCE_SECONDS")),
            "worker_concurrency": worker_concurrency(),
            **server.params(),
        },
        tag=tag,
        start_at=start_at,
        results=results,
        meter=meter,
        fanout=1,
        nominal_seconds=offer_seconds,
    )
    # Offline receivers get no live delivery: count only the online half.
    online_stored = line["stored"] - offline_messages
    delivered = sum(r["delivered"] for r in results)
    line["undelivered"] = max(0, online_stored - delivered)
    acks = {label: [x for r in results for x in r["ack_ms"].get(label, [])] for label in ("online", "offline")}
    for label, values in acks.items():
        line[f"ack_{label}_p50_ms"] = percentile(values, 0.5)
        line[f"ack_{label}_p99_ms"] = percentile(values, 0.99)
    for q in ("p50", "p99"):
        on, off = line[f"ack_online_{q}_ms"], line[f"ack_offline_{q}_ms"]
        line[f"ack_added_{q}_ms"] = round(off - on, 2) if on is not None and off is not None else None
    line.update(
        {
            "offline_messages": offline_messages,
            "push_decisions_per_s": round(n_decided / max(offer_seconds, _seconds_after(start_at, decided_last)), 1),
            "pushes_enqueued": n_pushed,
            "pushes_enqueued_per_s": round(n_pushed / max(offer_seconds, _seconds_after(start_at, decided_last)), 1),
            "pushes_accepted": len(accepted),
            "pushes_delivered_per_s": round(
                len(accepted) / max(offer_seconds, _seconds_after(start_at, accepted_last)), 1
            ),
            "pushes_received_by_endpoint": endpoint.received - received0,
            "messages_carried_by_a_later_push": carried,
            "pushes_missing": max(0, offline_messages - len(accepted) - carried),
            "push_p50_ms": percentile(push_ms, 0.5),
            "push_p99_ms": percentile(push_ms, 0.99),
            "push_status": dict(by_status),
            "worker_cpu_s_per_1k_pushes": round(worker_cpu / max(1, len(accepted)) * 1000, 3),
        }
    )
    return line


def _setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name)


def worker_concurrency() -> int:
    import os

    return int(os.environ.get("BENCH_WORKER_CONCURRENCY", "2"))


# --- W7: soak ------------------------------------------------------------------------------------


def w7_soak(
    server: Server,
    worker: Worker | None,
    env: dict[str, str],
    pairs: int,
    rate: float,
    seconds: float,
    churn: float,
    opts: Chat,
) -> dict[str, Any]:
    """W3's chats for ``seconds`` while every client drops its socket every ``churn`` seconds
    on average, stays away a moment, reconnects and resyncs (senders resend what was not
    acked, with the same client_msg_id). Samples the web processes' RSS and the Redis keys of
    our prefix; after the offer, receivers sync until they hold every message."""
    from bench.load import run_chat

    tag = f"w7{uuid.uuid4().hex[:6]}"
    plans, per_pair, interval = _direct_chat_plans(server, tag, pairs, rate, seconds, opts)
    for plan in plans:
        plan.churn, plan.catch_up = churn, True
    samples: list[tuple[float, int, int]] = []  # seconds since start, RSS KB, Redis keys
    meter = Meter(server, worker)
    origin = [0.0]

    def started(at: float) -> None:
        origin[0] = at
        meter.start()

    def sample() -> None:
        samples.append((round(time.time() - origin[0], 1), server.rss_kb(), redis_keys(env)))

    tick = max(2.0, min(30.0, seconds / 60))
    start_at, results = run_chat(plans, on_start=started, on_tick=sample, tick=tick)
    meter.stop()
    time.sleep(2)
    keys_after = redis_keys(env)
    offer = per_pair * interval
    warmup = min(60.0, max(10.0, offer * 0.1))
    during = [s for s in samples if warmup <= s[0] <= offer] or samples
    params = {
        "pairs": pairs,
        "offered_msgs_per_s": rate,
        "seconds": seconds,
        "churn_every_s": churn,
        "messages": per_pair * pairs,
        **server.params(),
    }
    line = chat_line(
        "W7", params, tag=tag, start_at=start_at, results=results, meter=meter, fanout=1, nominal_seconds=offer
    )
    # Receivers synced until complete (or the drain ended): what they still lack is dropped.
    line["lost"] += line["undelivered"]
    first, last = (during[0], during[-1]) if during else ((0.0, 0, 0), (0.0, 0, 0))
    line.update(
        {
            "rss_kb_first": first[1],
            "rss_kb_last": last[1],
            "rss_drift_percent": round((last[1] - first[1]) / first[1] * 100, 2) if first[1] else None,
            "redis_keys_first": first[2],
            "redis_keys_last": last[2],
            "redis_keys_after": keys_after,
            **redis_leftovers(env),
            "disconnects": sum(r["disconnects"] for r in results),
            "syncs": sum(r["syncs"] for r in results),
            "via_sync": sum(r["via_sync"] for r in results),
            "sync_overlap": sum(r["overlap"] for r in results),
            "resent": sum(r["resent"] for r in results),
            "samples": [list(s) for s in samples[:: max(1, len(samples) // 60)]],
        }
    )
    return line
