"""`make bench`: start the full stack as production would, seed it, run the workloads.

    python -m bench.run                    # the quick suite (under 5 minutes)
    python -m bench.run --full             # everything, including the soak (W7)
    python -m bench.run --only W4          # one workload (BENCH_ONLY_FIRST=n: its first n runs)
    python -m bench.run --layout cluster   # W3 and W4: 1 web process direct vs nginx + 2
    python -m bench.run --only W7 --soak-seconds 60 --soak-rate 50

Prints one JSON line per run and a table, and writes the suite's lines to
bench/results/latest.jsonl and a latency plot to bench/results/latency.png.
See docs/performance.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from bench import stack
from bench.stack import RESULTS, ROOT, PushEndpoint, Server, Worker

Layout = tuple[str, int]  # "direct" or "nginx", web processes


@dataclass
class Run:
    workload: str
    layout: Layout | None  # None: the suite's layout (--layout, --web)
    go: Callable[[Server, Worker | None], dict[str, Any]]
    needs_worker: bool = False


def environment(args: argparse.Namespace) -> dict[str, Any]:
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    import channels
    import django
    from django.conf import settings

    return {
        "git": revision.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
        "django": django.get_version(),
        "channels": channels.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "web_server": os.environ.get("WEB_SERVER", "uvicorn"),
        "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
        "celery_worker": None if args.no_worker else {"concurrency": args.worker_concurrency},
    }


def table(lines: list[dict[str, Any]]) -> str:
    cols = ["workload", "msgs_per_s", "deliveries_per_s", "p50_ms", "p99_ms", "lost", "undelivered", "duplicates"]
    cols += ["errors"]
    extra = [
        "rss_kb_per_conn", "connects_per_s", "seconds_to_sync_done", "server_cpu_s_per_1k_msgs",
        "worker_cpu_s_per_1k_msgs", "not_sent", "unacked", "ack_p99_ms", "ack_added_p50_ms", "ack_added_p99_ms",
        "ack_added_vs_w3_p99_ms", "pushes_enqueued_per_s", "pushes_delivered_per_s", "pushes_missing", "push_p99_ms",
        "rss_drift_percent", "redis_keys_first", "redis_keys_last", "redis_keys_after", "redis_keys_without_ttl",
        "users_online_after_all_left", "push_backlog", "server_log_problems",
    ]  # fmt: skip
    rows = [[*cols, "other", "params"]]
    for line in lines:
        shown = [k for k in extra if line.get(k) is not None and (line[k] != 0 or k == "rss_drift_percent")]
        other = ", ".join(f"{k}={line[k]}" for k in shown)
        rows.append([str(line.get(c, "")) for c in cols] + [other, json.dumps(line["params"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def plot(lines: list[dict[str, Any]]) -> None:
    """Latency percentiles against offered load: W3 per layout, W4 per group size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    w3 = [x for x in lines if x["workload"] == "W3"]
    for layout in sorted({(x["params"]["layout"], x["params"]["web_processes"]) for x in w3}):
        runs = sorted(
            (x for x in w3 if (x["params"]["layout"], x["params"]["web_processes"]) == layout),
            key=lambda x: x["params"]["offered_msgs_per_s"],
        )
        xs = [r["params"]["offered_msgs_per_s"] for r in runs]
        color = next(colors)
        for q, style in (("p50_ms", "--"), ("p99_ms", "-")):
            label = f"{q[:3]} {layout[0]}, {layout[1]} web"
            axes[0].plot(xs, [r[q] or 0 for r in runs], style, color=color, marker="o", label=label)
    axes[0].set_title("W3 1:1 chat: end-to-end latency")
    axes[0].set_xlabel("offered messages/s")
    if w3:
        axes[0].set_xscale("log")
    w4 = [x for x in lines if x["workload"] == "W4"]
    keys = sorted({(x["params"]["members"], x["params"]["layout"], x["params"]["web_processes"]) for x in w4})
    for members, layout, webs in keys:
        runs = sorted(
            (
                x
                for x in w4
                if (x["params"]["members"], x["params"]["layout"], x["params"]["web_processes"])
                == (members, layout, webs)
            ),
            key=lambda x: x["params"]["offered_deliveries_per_s"],
        )
        xs = [r["params"]["offered_deliveries_per_s"] for r in runs]
        color = next(colors)
        for q, style in (("p50_ms", "--"), ("p99_ms", "-")):
            label = f"{q[:3]} {members} members, {layout} {webs} web"
            axes[1].plot(xs, [r[q] or 0 for r in runs], style, color=color, marker="o", label=label)
    axes[1].set_title("W4 group fan-out: latency to the last member")
    axes[1].set_xlabel("offered deliveries/s")
    if w4:
        axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "latency.png", dpi=110)


def suite(args: argparse.Namespace, env: dict[str, str], endpoint: PushEndpoint) -> list[Run]:
    from bench import workloads as w

    chat = w.Chat(procs=2, drain=args.drain)
    procs = 2
    single, cluster = ("direct", 1), ("nginx", 2)
    quick: list[Run] = [
        Run("W1", None, lambda s, _: w.w1_idle(s, 2000, procs)),
        Run("W2", None, lambda s, _: w.w2_storm(s, 1000, 500, procs)),
        Run("W3", None, lambda s, k: w.w3_direct(s, k, 50, 50, 10, chat)),  # W6's reference
        Run("W3", None, lambda s, k: w.w3_direct(s, k, 100, 250, 10, chat)),
        Run("W3", None, lambda s, k: w.w3_direct(s, k, 100, 500, 10, chat)),
        Run("W3", None, lambda s, k: w.w3_direct(s, k, 100, 1000, 10, chat)),
        Run("W4", None, lambda s, k: w.w4_group(s, k, 10, 50, 10, chat)),
        Run("W4", None, lambda s, k: w.w4_group(s, k, 100, 20, 10, chat)),
        Run("W4", None, lambda s, k: w.w4_group(s, k, 1000, 5, 10, chat)),
        Run("W5", None, lambda s, _: w.w5_sync(s, 100, 10_000)),
        Run("W6", None, lambda s, k: w.w6_push(s, _need(k), endpoint, 50, 50, 10, chat), needs_worker=True),
    ]
    compare: list[Run] = [
        Run("W3", layout, lambda s, k: w.w3_direct(s, k, 100, 250, 10, chat)) for layout in (single, cluster)
    ] + [Run("W4", layout, lambda s, k: w.w4_group(s, k, 100, 20, 10, chat)) for layout in (single, cluster)]
    soak = w.Chat(procs=2, drain=max(args.drain, 60.0), grace=10.0)
    full: list[Run] = [
        Run("W1", None, lambda s, _: w.w1_idle(s, 10_000, 4)),
        Run("W2", None, lambda s, _: w.w2_storm(s, 5000, 1000, 4)),
        Run("W3", None, lambda s, k: w.w3_direct(s, k, 500, 2500, 20, chat)),
        Run("W4", None, lambda s, k: w.w4_group(s, k, 1000, 2, 20, chat)),
        Run("W4", None, lambda s, k: w.w4_group(s, k, 1000, 10, 20, chat)),
        Run("W4", None, lambda s, k: w.w4_group(s, k, 1000, 25, 20, chat)),
        Run("W6", None, lambda s, k: w.w6_push(s, _need(k), endpoint, 100, 250, 20, chat), needs_worker=True),
        Run(
            "W7",
            None,
            lambda s, k: w.w7_soak(
                s, k, env, args.soak_pairs, args.soak_rate, args.soak_seconds, args.soak_churn, soak
            ),
            needs_worker=True,
        ),
    ]
    compare_full: list[Run] = [
        Run("W3", layout, lambda s, k: w.w3_direct(s, k, 100, 500, 10, chat)) for layout in (single, cluster)
    ] + [Run("W4", layout, lambda s, k: w.w4_group(s, k, 1000, 5, 10, chat)) for layout in (single, cluster)]
    main = quick + (full if args.full else [])
    side_by_side = compare + (compare_full if args.full else [])
    runs = {"default": main + side_by_side, "direct": main, "nginx": main, "cluster": side_by_side}[args.layout]
    if args.only:
        first = int(os.environ.get("BENCH_ONLY_FIRST", "99"))
        wanted = {x.strip().upper() for x in args.only.split(",")}
        runs = [r for r in runs if r.workload in wanted]
        if args.only.upper() == "W7" and not args.full:  # the soak is in bench-full; --only W7 asks for it
            runs = [r for r in full if r.workload == "W7"]
        runs = runs[:first]
    return runs


def _need(worker: Worker | None) -> Worker:
    if worker is None:
        raise RuntimeError("this workload needs the Celery worker")
    return worker


@contextmanager
def _maybe_worker(env: dict[str, str], concurrency: int, start: bool) -> Iterator[Worker | None]:
    if not start:
        yield None
        return
    with stack.celery_worker(env, concurrency) as worker:
        yield worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the whole suite (longer), including the soak")
    parser.add_argument("--only", help="only these workloads, e.g. W3 or W3,W4")
    parser.add_argument("--web", type=int, default=int(os.environ.get("BENCH_WEB_PROCESSES", "2")))
    parser.add_argument(
        "--layout",
        choices=["default", "direct", "nginx", "cluster"],
        default=os.environ.get("BENCH_LAYOUT"),
        help="direct: clients spread over the --web processes' ports; nginx: through nginx in front of them; "
        "cluster: only W3 and W4 with 1 web process direct vs nginx + 2; default: direct, then the cluster "
        "runs (with --only: direct)",
    )
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to wait for what is missing after a run")
    parser.add_argument("--no-worker", action="store_true", help="no Celery worker except for W6 and W7")
    parser.add_argument("--worker-concurrency", type=int, default=int(os.environ.get("BENCH_WORKER_CONCURRENCY", "2")))
    parser.add_argument("--soak-seconds", type=float, default=float(os.environ.get("BENCH_SOAK_SECONDS", "1800")))
    parser.add_argument("--soak-rate", type=float, default=float(os.environ.get("BENCH_SOAK_RATE", "1250")))
    parser.add_argument("--soak-pairs", type=int, default=int(os.environ.get("BENCH_SOAK_PAIRS", "500")))
    parser.add_argument(
        "--soak-churn", type=float, default=30.0, help="mean seconds between a soak client's disconnects"
    )
    args = parser.parse_args()
    args.layout = args.layout or ("direct" if args.only else "default")
    os.environ["BENCH_WORKER_CONCURRENCY"] = str(args.worker_concurrency)
    env = stack.bench_env()
    stack.reset_database(env)
    _setup_django(env)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stack.LOGS, ignore_errors=True)
    endpoint = PushEndpoint()
    runs = suite(args, env, endpoint)
    default_layout: Layout = ("nginx" if args.layout == "nginx" else "direct", args.web)
    lines: list[dict[str, Any]] = []
    meta = environment(args)
    stack.purge_push_work()
    try:
        with _maybe_worker(env, args.worker_concurrency, not args.no_worker) as shared_worker:
            i = 0
            while i < len(runs):
                layout = runs[i].layout or default_layout
                group = []
                while i < len(runs) and (runs[i].layout or default_layout) == layout:
                    group.append(runs[i])
                    i += 1
                with stack.serve(env, *layout) as server:
                    for run in group:
                        with ExitStack() as own:
                            worker = shared_worker
                            if worker is None and run.needs_worker:
                                worker = own.enter_context(stack.celery_worker(env, args.worker_concurrency))
                            logs = stack.Logs(server.log_paths() + ([worker.log_path] if worker else []))
                            logs.mark()
                            line = run.go(server, worker)
                            problems, first = logs.problems()
                        if problems:  # the logs are in bench/results/logs/
                            line["server_log_problems"], line["server_log_first_problem"] = problems, first
                        left = stack.purge_push_work()
                        if "msgs_per_s" in line and run.workload != "W5":
                            line["push_backlog"] = left["push_outbox_left"]
                        _compare_with_w3(line, lines)
                        line["env"] = meta
                        print(json.dumps(line), flush=True)
                        lines.append(line)
                        (RESULTS / "latest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    finally:
        endpoint.close()
        stack.delete_queues()
    print()
    print(table(lines))
    if any(x["workload"] in ("W3", "W4") for x in lines):
        plot(lines)
        print(f"\nplot: {RESULTS / 'latency.png'}")


def _compare_with_w3(line: dict[str, Any], earlier: list[dict[str, Any]]) -> None:
    """W6 against the last W3 run of the same pairs, rate and layout: sends with the push
    path against a run where every recipient was online."""
    if line["workload"] != "W6":
        return
    same = ("pairs", "offered_msgs_per_s", "layout", "web_processes")
    for ref in reversed(earlier):
        if ref["workload"] == "W3" and all(ref["params"].get(k) == line["params"].get(k) for k in same):
            for q in ("p50", "p99"):
                mine, theirs = line.get(f"ack_offline_{q}_ms"), ref.get(f"ack_{q}_ms")
                if mine is not None and theirs is not None:
                    line[f"ack_added_vs_w3_{q}_ms"] = round(mine - theirs, 2)
            return


def _setup_django(env: dict[str, str]) -> None:
    import sys

    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


if __name__ == "__main__":
    main()
