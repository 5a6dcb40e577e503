# The L3 agent's metadata proxies: one per router, inside its namespace, outliving the agent (pid files under
# <state_path>/external/pids, as Neutron's), adopted at restart, respawned the moment one dies (pidfd, no polling).
from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from provnet.dataplane.netns import NETNS_RUN_DIR

log = logging.getLogger("provnet.l3_agent")

RESPAWN_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before respawn, by deaths within STABLE seconds
STABLE = 30.0


@dataclass
class _Proxy:
    key: str
    namespace: str
    argv: list[str]
    pid: int = 0
    pidfd: int | None = None
    deaths: int = 0
    started: float = 0.0
    timer: asyncio.TimerHandle | None = None


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def in_namespace(pid: int, namespace: str) -> bool:
    """Whether process `pid` lives in the network namespace named `namespace` now (a namespace deleted by hand and
    made again is another one: a process left in the old one serves nobody)."""
    want = _netns_inode(os.path.join(NETNS_RUN_DIR, namespace))
    return want is not None and _netns_inode(f"/proc/{pid}/ns/net") == want


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []  # NUL-terminated arguments


class ProxyKeeper:
    """Keeps one process per key running (`argv` inside `namespace` via `ip netns exec`).

    A process that survives an agent restart is adopted when its pid file names a live process whose command line
    is the one wanted (same key, same options): it keeps serving, untouched. A process that exits is respawned
    at once (then with backoff while it keeps dying), watched through a pidfd on the agent's loop.
    """

    def __init__(self, directory: str, env: dict[str, str] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.pids = Path(directory) / "pids"
        self.logs = Path(directory) / "logs"
        self.env = env
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.procs: dict[str, _Proxy] = {}
        self.respawns = 0
        self.adopted = 0

    def pid(self, key: str) -> int | None:
        proxy = self.procs.get(key)
        return proxy.pid if proxy and proxy.pid else None

    def ensure(self, key: str, namespace: str, argv: Sequence[str]) -> None:
        """Running (adopted or spawned) with exactly `argv`; a different one is replaced."""
        proxy = self.procs.get(key)
        if proxy is not None and proxy.argv == list(argv) and proxy.namespace == namespace and \
                (proxy.pidfd is not None or proxy.timer is not None):
            if proxy.pidfd is None or in_namespace(proxy.pid, namespace):
                return
            log.warning("metadata proxy %s (process %d) is not in namespace %s any more (made again?); replacing it",
                        key, proxy.pid, namespace)
        if proxy is not None:
            self._kill(proxy)
        proxy = self.procs[key] = _Proxy(key, namespace, list(argv))
        if not self._adopt(proxy):
            self._spawn(proxy)

    def remove(self, key: str) -> None:
        proxy = self.procs.pop(key, None)
        if proxy is not None:
            self._kill(proxy)
        else:
            pid = self._read_pid(key)
            if pid and key in " ".join(_cmdline(pid)):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        (self.pids / f"{key}.pid").unlink(missing_ok=True)

    async def stop(self, key: str, timeout: float = 5.0) -> None:
        """Stop the key's process (kept, or left by an earlier run) and wait until it has exited, so that the next
        one can bind its addresses; SIGKILL after `timeout` seconds."""
        proxy = self.procs.pop(key, None)
        if proxy is not None:
            pid = proxy.pid
        else:
            pid = self._read_pid(key) or 0
            if pid and key not in " ".join(_cmdline(pid)):
                pid = 0
        fd = None
        if pid:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                pass
        if proxy is not None:
            self._kill(proxy)
        elif pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        (self.pids / f"{key}.pid").unlink(missing_ok=True)
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        gone = loop.create_future()

        def exited() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(fd, exited)
        try:
            await asyncio.wait_for(gone, timeout)
        except TimeoutError:
            log.warning("metadata proxy %s (process %d) did not stop in %g s; killing it", key, pid, timeout)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def orphans(self) -> list[str]:
        """Keys with a pid file and no process kept: left by an earlier run for routers no longer ours."""
        if not self.pids.is_dir():
            return []
        return sorted(p.stem for p in self.pids.glob("*.pid") if p.stem not in self.procs)

    def close(self) -> None:
        """Stop watching; the processes keep running (the next agent adopts them)."""
        for proxy in self.procs.values():
            self._unwatch(proxy)
            if proxy.timer is not None:
                proxy.timer.cancel()

    # --- internals ----------------------------------------------------------------------------------------------
    def _read_pid(self, key: str) -> int | None:
        try:
            text = (self.pids / f"{key}.pid").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _adopt(self, proxy: _Proxy) -> bool:
        pid = self._read_pid(proxy.key)
        if not pid:
            return False
        cmdline = _cmdline(pid)
        elsewhere = cmdline == proxy.argv and not in_namespace(pid, proxy.namespace)
        if cmdline != proxy.argv or elsewhere:
            if cmdline and proxy.key in " ".join(cmdline):  # ours, but other options or a stale namespace: replace
                log.info("metadata proxy %s (process %d) runs %s; replacing it", proxy.key, pid,
                         f"outside {proxy.namespace} (made again?)" if elsewhere else "with other options")
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            return False
        try:
            proxy.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        proxy.pid = pid
        proxy.started = self.clock()
        asyncio.get_running_loop().add_reader(proxy.pidfd, self._on_exit, proxy)
        self.adopted += 1
        log.info("adopted the metadata proxy of %s (process %d)", proxy.key, pid)
        return True

    def _spawn(self, proxy: _Proxy) -> None:
        proxy.timer = None
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{proxy.key}.log", "ab") as out:
            # the namespace's program is exec'd by `ip netns exec`: the pid is the proxy's own. A new session, so
            # that a signal to the agent's process group (Ctrl-C) does not reach the proxies it leaves running
            popen = subprocess.Popen(["ip", "netns", "exec", proxy.namespace, *proxy.argv], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        proxy.pid = popen.pid
        proxy.started = self.clock()
        tmp = self.pids / f"{proxy.key}.pid.tmp"
        tmp.write_text(f"{popen.pid}\n")
        os.replace(tmp, self.pids / f"{proxy.key}.pid")
        proxy.pidfd = os.pidfd_open(popen.pid)
        asyncio.get_running_loop().add_reader(proxy.pidfd, self._on_exit, proxy, popen)
        log.info("metadata proxy for %s started in %s (process %d)", proxy.key, proxy.namespace, popen.pid)

    def _unwatch(self, proxy: _Proxy) -> None:
        if proxy.pidfd is not None:
            try:
                asyncio.get_running_loop().remove_reader(proxy.pidfd)
            except RuntimeError:
                pass
            os.close(proxy.pidfd)
            proxy.pidfd = None

    def _on_exit(self, proxy: _Proxy, popen: subprocess.Popen | None = None) -> None:
        if popen is not None:
            popen.poll()  # reap our child
        self._unwatch(proxy)
        if self.procs.get(proxy.key) is not proxy:
            return
        uptime = self.clock() - proxy.started
        proxy.deaths = 1 if uptime >= STABLE else proxy.deaths + 1
        delay = RESPAWN_BACKOFF[min(proxy.deaths - 1, len(RESPAWN_BACKOFF) - 1)]
        self.respawns += 1
        log.error("metadata proxy for %s (process %d) exited after %.1f s; respawning it%s", proxy.key, proxy.pid,
                  uptime, f" in {delay:g} s" if delay else "")
        proxy.pid = 0
        proxy.timer = asyncio.get_running_loop().call_later(delay, self._spawn, proxy)

    def _kill(self, proxy: _Proxy) -> None:
        if proxy.timer is not None:
            proxy.timer.cancel()
            proxy.timer = None
        self._unwatch(proxy)
        if proxy.pid:
            try:
                os.kill(proxy.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        proxy.pid = 0
