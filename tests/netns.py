"""Test hosts made of Linux network namespaces: real addresses, real links, real failures.

A ``Network`` is a bridge in the root namespace with a private /24 of its own
(``10.x.y.0/24``); the root namespace is ``10.x.y.1`` on it (the gateway) and every ``Host``
is a network namespace plugged into the bridge by a veth pair, with the next address. Hosts
reach each other and the gateway; a host is cut off by taking its veth down, and it dies by
SIGKILL to every process in its namespace.

Processes in a namespace cannot reach the root namespace's loopback, where PostgreSQL, Redis
and RabbitMQ listen on these machines: ``Network.forward`` relays a port of the gateway
address to such a service (a small asyncio relay run as a subprocess: ``python -m
tests.netns forward``), so the hosts talk to them over the network path like remote machines.
The machine's services keep their configuration.

Names carry the pid of the test process (``cht<pid>x<n>``), so xdist workers and concurrent
runs never collide, and a later run removes what a killed run left behind. Everything here
needs root and iproute2 (``unavailable()`` says why not); the cluster tests skip without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
_IP = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
_networks = itertools.count(1)
_TAG = re.compile(r"^cht(\d+)x\d+")


def unavailable() -> str | None:
    """Why network-namespace hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the suite as root)"
    if _IP is None:
        return "iproute2's `ip` is missing (scripts/ensure_packages.sh installs it)"
    return None


def ip(*args: str, check: bool = True) -> str:
    assert _IP is not None, unavailable()
    result = subprocess.run([_IP, *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(netns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", netns, check=False).split()]


def _kill_netns(netns: str, timeout: float = 10) -> None:
    """SIGKILL every process in the namespace and wait until they are gone."""
    deadline = time.monotonic() + timeout
    while pids := _netns_pids(netns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in {netns} survived SIGKILL")
        time.sleep(0.02)


def _remove_stale() -> None:
    """Remove namespaces and links that runs which are no longer alive left behind."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _TAG.match(name)
        if match and not _alive(int(match.group(1))):
            _kill_netns(name)
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show").splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        match = _TAG.match(name)
        if match and not _alive(int(match.group(1))):
            ip("link", "del", name, check=False)


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "chat-test-netns.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_prefix() -> str:
    """A 10.x.y.0/24 that no address or route on this machine touches."""
    used = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show", "table", "all")
    for _ in range(1000):
        prefix = f"10.{random.randint(200, 254)}.{random.randint(0, 255)}"
        if f"{prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 for a test network")


@dataclass
class Host:
    """A machine of the test network: a network namespace with one interface, ``eth0``."""

    name: str
    netns: str
    address: str
    veth: str  # the root namespace's end of its link, on the bridge

    def popen(self, argv: list[str], *, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
        """Start a process on this host (``ip netns exec``), its output appended to ``log_path``."""
        assert _IP is not None
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [_IP, "netns", "exec", self.netns, *argv],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the test's terminal is not theirs
            )

    def pids(self) -> list[int]:
        return _netns_pids(self.netns)

    def kill_all(self) -> None:
        """The host dies: SIGKILL to every process on it."""
        _kill_netns(self.netns)

    def link_down(self) -> None:
        """Cut the host off the network (its link stays down until ``link_up``)."""
        ip("link", "set", self.veth, "down")

    def link_up(self) -> None:
        ip("link", "set", self.veth, "up")


@dataclass
class Network:
    """A bridge with hosts on it; ``close()`` removes everything it made, processes included."""

    tag: str = field(default_factory=lambda: f"cht{os.getpid()}x{next(_networks)}")
    prefix: str = ""
    hosts: list[Host] = field(default_factory=list)
    relays: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        assert len(self.bridge) <= 15, self.tag  # Linux interface names
        with _allocation_lock():
            _remove_stale()
            self.prefix = _free_prefix()
            ip("link", "add", self.bridge, "type", "bridge")
            try:
                ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
                ip("link", "set", self.bridge, "up")
            except RuntimeError:
                self.close()
                raise

    @property
    def bridge(self) -> str:
        return f"{self.tag}b"

    @property
    def gateway(self) -> str:
        """The root namespace's address on this network."""
        return f"{self.prefix}.1"

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        host = Host(
            name=name,
            netns=f"{self.tag}-{name}",
            address=f"{self.prefix}.{index + 1}",
            veth=f"{self.tag}h{index}",
        )
        assert len(host.veth) <= 15, host.veth
        self.hosts.append(host)
        ip("netns", "add", host.netns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.netns, "link", "set", "eth0", "up")
        ip("-n", host.netns, "link", "set", "lo", "up")
        return host

    def forward(self, targets: dict[int, tuple[str, int]], log_path: Path) -> None:
        """Relay each ``gateway:port`` to ``targets[port]`` (host, port) in the root namespace."""
        specs = [f"{port}={host}:{target}" for port, (host, target) in targets.items()]
        with log_path.open("ab") as log:
            relay = subprocess.Popen(
                [sys.executable, "-m", "tests.netns", "forward", self.gateway, *specs],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.relays.append(relay)
        assert relay.stdout is not None
        line = relay.stdout.readline()  # the relay says "ready" once it listens
        if line.strip() != b"ready":
            raise RuntimeError(f"relay did not start: {line!r}; see {log_path}")

    def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(RuntimeError):
                host.kill_all()
            ip("link", "del", host.veth, check=False)  # at once; the namespace's end goes with it
            ip("netns", "del", host.netns, check=False)
        for relay in self.relays:
            relay.kill()
            relay.wait()
        ip("link", "del", self.bridge, check=False)


# --- the relay (runs as its own process) ---------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _relay(listen_host: str, specs: list[str], out: IO[str]) -> None:
    parent = os.getppid()

    def handler(target_host: str, target_port: int) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        return handle

    for spec in specs:
        port, target = spec.split("=")
        target_host, target_port = target.rsplit(":", 1)
        await asyncio.start_server(handler(target_host, int(target_port)), listen_host, int(port), reuse_address=True)
    out.write("ready\n")
    out.flush()
    while os.getppid() == parent:  # end with the test process that started us
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    if sys.argv[1:2] != ["forward"] or len(sys.argv) < 4:
        sys.exit("usage: python -m tests.netns forward LISTEN_HOST PORT=HOST:PORT...")
    asyncio.run(_relay(sys.argv[2], sys.argv[3:], sys.stdout))
