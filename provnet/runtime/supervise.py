# Child processes a parent runs and keeps running: readiness and liveness over systemd's notify protocol, restarts
# with backoff, and a clear stop when a child cannot even start.
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before the 1st, 2nd... restart in a row
STABLE = 60.0  # a child that stayed up this long starts its backoff over
STOP_TIMEOUT = 15.0  # seconds a child gets after SIGTERM before SIGKILL
DIE_WITH_PARENT = "PROVNET_DIE_WITH_PARENT"  # env: the child asks the kernel to SIGTERM it when the parent dies
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


class StartupError(Exception):
    """A child could not start (it exited before it was ready): the message names it and its exit status."""


@dataclass
class ChildSpec:
    """One child: `argv` is a whole command (e.g. `python -m provnet ... metadata-api`), run with `env` added."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    pass_fds: Sequence[int] = ()  # file descriptors the child inherits (a listening socket it shares)
    notify: bool = True  # speaks the notify protocol; False (a program of someone else's): ready once started
    log: str | None = None  # append the child's stdout and stderr to this file (default: the parent's)


@dataclass
class _Child:
    spec: ChildSpec
    proc: subprocess.Popen | None = None
    pidfd: int | None = None
    ready: bool = False  # READY=1 received from the current process
    ever_ready: bool = False
    started_at: float = 0.0
    last_ping: float = 0.0
    failures_in_row: int = 0
    restarts: int = 0
    restart_timer: asyncio.TimerHandle | None = None
    held: bool = False  # stopped on purpose (hold): not restarted until released
    failed: str | None = None  # why it stopped for good (exited before it was ever ready)


class Supervisor:
    """A Service that runs `children` as processes and keeps them running.

    Each child tells it READY=1 (and WATCHDOG=1 every `watchdog` / 2 seconds) on a notify socket of its own, as it
    would tell systemd: `run_services(..., systemd=True)` does that in every provnet server. A child that exits or
    whose pings stop (a wedged event loop) is killed and started again after a backoff (0.5 s, 1 s, 2 s, ...
    30 s; back to 0.5 s once it stayed up for a minute), logged and counted (`restarts`, `on_restart`). A child
    that exits before it was ever ready is a startup error: `failed` is set and `on_fatal` called, so the parent
    stops with the child's reason instead of restarting a misconfiguration forever.
    """

    name = "supervisor"

    def __init__(self, children: Sequence[ChildSpec], *, watchdog: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, notify_path: str | None = None) -> None:
        self.children = [_Child(spec) for spec in children]
        self.watchdog = watchdog
        self.clock = clock
        self.notify_path = notify_path  # a socket file instead of an abstract name: children in other network
        # namespaces (abstract unix names are per namespace) reach a file
        self.failed: StartupError | None = None
        self.on_fatal: Callable[[], None] = lambda: None
        self.on_restart: Callable[[str], None] = lambda name: None
        self.on_change: Callable[[], None] = lambda: None  # a child started, stopped, got ready, was held
        self.all_ready = asyncio.Event()
        self._sock: socket.socket | None = None
        self._address = ""
        self._stopping = False
        self._watch: asyncio.TimerHandle | None = None

    def reload(self, config: object) -> None:
        """SIGHUP to every running child (their configuration file was rewritten first): they reload too."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGHUP)

    # --- life -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if self.notify_path:
            self._address = self.notify_path
            if os.path.exists(self.notify_path):
                os.unlink(self.notify_path)
            sock.bind(self.notify_path)
        else:
            self._address = f"@provnet-supervisor-{os.getpid()}-{secrets.token_hex(4)}"
            sock.bind("\0" + self._address[1:])
        self._sock = sock
        loop.add_reader(sock.fileno(), self._on_datagram)
        for child in self.children:
            self._spawn(child)
        self._tick()
        if all(c.ever_ready for c in self.children):
            self.all_ready.set()
        # the parent is ready once every child is (or one failed to start, which stops everything)
        waiter = asyncio.ensure_future(self.all_ready.wait())
        fatal = asyncio.Event()
        previous = self.on_fatal

        def on_fatal() -> None:
            fatal.set()
            previous()

        self.on_fatal = on_fatal
        fatal_wait = asyncio.ensure_future(fatal.wait())
        await asyncio.wait([waiter, fatal_wait], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        fatal_wait.cancel()
        self.on_fatal = previous
        if self.failed is not None:
            await self.stop()
            raise self.failed

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        loop = asyncio.get_running_loop()
        for child in self.children:
            if child.restart_timer is not None:
                child.restart_timer.cancel()
        running = [(c, c.proc) for c in self.children if c.proc is not None and c.proc.poll() is None]
        for _child, proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = self.clock() + STOP_TIMEOUT
        for child, proc in running:
            while proc.poll() is None and self.clock() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.warning("%s (process %d) did not stop in %.0f s; killing it", child.spec.name, proc.pid,
                            STOP_TIMEOUT)
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for child in self.children:
            self._forget_pidfd(child)
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            if self.notify_path and os.path.exists(self.notify_path):
                os.unlink(self.notify_path)
        self.on_change()

    # --- children added and held while running (the lab's supervisor) -------------------------------------------
    def add(self, spec: ChildSpec) -> None:
        """Start another child now and keep it running like the others."""
        if any(c.spec.name == spec.name for c in self.children):
            raise ValueError(f"a child named {spec.name!r} exists already")
        child = _Child(spec)
        self.children.append(child)
        self.all_ready.clear()
        self._spawn(child)

    def child(self, name: str) -> _Child:
        for child in self.children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    def hold(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop a child on purpose (`sig`: SIGKILL to make it fail as a crashed host would) and do not restart it
        until `release`."""
        child = self.child(name)
        child.held = True
        if child.restart_timer is not None:
            child.restart_timer.cancel()
            child.restart_timer = None
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(sig)
        log.info("%s held (signal %d): not restarted until released", name, sig)
        self.on_change()

    def release(self, name: str) -> None:
        """Start a held (or failed) child again."""
        child = self.child(name)
        child.held, child.failed = False, None
        if child.proc is None or child.proc.poll() is not None:
            child.failures_in_row = 0
            self._spawn(child)
        self.on_change()

    # --- children ---------------------------------------------------------------------------------------------
    def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env, "NOTIFY_SOCKET": self._address,
               "WATCHDOG_USEC": str(int(self.watchdog * 1e6)), DIE_WITH_PARENT: str(os.getpid())}
        env.pop("WATCHDOG_PID", None)
        out = open(child.spec.log, "ab") if child.spec.log else None  # noqa: SIM115 - the child holds it
        try:
            child.proc = subprocess.Popen(list(child.spec.argv), env=env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT if out else None,
                                          pass_fds=tuple(child.spec.pass_fds))
        finally:
            if out is not None:
                out.close()
        child.ready = not child.spec.notify
        child.ever_ready = child.ever_ready or not child.spec.notify
        child.started_at = child.last_ping = self.clock()
        child.pidfd = os.pidfd_open(child.proc.pid)
        asyncio.get_running_loop().add_reader(child.pidfd, self._on_exit, child)
        log.debug("%s runs in process %d", child.spec.name, child.proc.pid)  # its own start line has the pid
        if all(c.ever_ready for c in self.children):
            self.all_ready.set()
        self.on_change()

    def _forget_pidfd(self, child: _Child) -> None:
        if child.pidfd is not None:
            try:
                asyncio.get_running_loop().remove_reader(child.pidfd)
            except RuntimeError:
                pass
            os.close(child.pidfd)
            child.pidfd = None

    def _on_exit(self, child: _Child) -> None:
        proc = child.proc
        assert proc is not None
        status = proc.poll()
        if status is None:
            return
        self._forget_pidfd(child)
        child.ready = False
        if self._stopping:
            return
        code = f"signal {-status}" if status < 0 else f"status {status}"
        if child.held:
            log.info("%s (process %d) stopped with %s; held", child.spec.name, proc.pid, code)
            self.on_change()
            return
        if not child.ever_ready:
            self.failed = StartupError(f"the {child.spec.name} (process {proc.pid}) exited with {code} before it "
                                       "was ready; see its message above")
            child.failed = str(self.failed)
            log.error("%s", self.failed)
            self.on_change()
            self.on_fatal()
            return
        uptime = self.clock() - child.started_at
        child.failures_in_row = 1 if uptime >= STABLE else child.failures_in_row + 1
        delay = BACKOFF[min(child.failures_in_row - 1, len(BACKOFF) - 1)]
        child.restarts += 1
        log.error("%s (process %d) exited with %s after %.0f s; restarting it in %g s (restart %d)",
                  child.spec.name, proc.pid, code, uptime, delay, child.restarts)
        self.on_restart(child.spec.name)
        child.restart_timer = asyncio.get_running_loop().call_later(delay, self._restart, child)
        self.on_change()

    def _restart(self, child: _Child) -> None:
        child.restart_timer = None
        if not self._stopping and not child.held:
            self._spawn(child)

    def _on_datagram(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(4096, socket.CMSG_SPACE(_UCRED.size))
            except (BlockingIOError, InterruptedError):
                return
            pid = None
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(value) >= _UCRED.size:
                    pid = _UCRED.unpack_from(value)[0]
            child = next((c for c in self.children if c.proc is not None and c.proc.pid == pid), None)
            if child is None:
                continue  # a grandchild or a stranger: not ours to judge
            fields = data.decode("utf-8", "replace").split("\n")
            now = self.clock()
            if "READY=1" in fields or "WATCHDOG=1" in fields:
                child.last_ping = now
            if "READY=1" in fields and not child.ready:
                child.ready = True
                if child.ever_ready:
                    log.info("%s (process %d) is serving again", child.spec.name, pid)
                else:
                    log.debug("%s (process %d) is ready", child.spec.name, pid)
                child.ever_ready = True
                if all(c.ever_ready for c in self.children):
                    self.all_ready.set()
                self.on_change()

    def _tick(self) -> None:
        """Kill a ready child whose watchdog pings stopped (its loop is wedged); its exit restarts it."""
        now = self.clock()
        for child in self.children:
            proc = child.proc
            if proc is None or proc.poll() is not None or not child.ready or not child.spec.notify:
                continue
            if now - child.last_ping > self.watchdog:
                log.error("%s (process %d) sent no watchdog ping for %.0f s: its event loop is stuck; killing it",
                          child.spec.name, proc.pid, now - child.last_ping)
                child.ready = False
                proc.kill()
        self._watch = asyncio.get_running_loop().call_later(min(1.0, self.watchdog / 4), self._tick)

    def status(self) -> list[dict]:
        out = []
        for c in self.children:
            running = c.proc is not None and c.proc.poll() is None
            state = ("failed" if c.failed else "held" if c.held else "running" if running and c.ready else
                     "starting" if running else "restarting")
            out.append({"name": c.spec.name, "pid": c.proc.pid if c.proc else None, "ready": c.ready,
                        "restarts": c.restarts, "state": state, "failed": c.failed})
        return out
