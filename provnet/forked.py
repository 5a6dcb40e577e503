# A service run in a child process forked before the event loop starts, and the parent's watch over it.
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STOP_TIMEOUT = 15.0  # seconds a child gets to stop after SIGTERM before SIGKILL


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (even by SIGKILL), so no child outlives `provnet serve`."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's stop() is the only guard
        pass


class ForkedService:
    """`body` runs in a child process (its own store connection, event loop and core); this object, one of the
    parent's services, watches it.

    Fork with `fork()` before the parent starts its event loop or opens its store (nothing to share by
    accident). If the child exits on its own, the parent is told through `on_exit`, so that the whole process
    stops instead of running half a service; `failed` says whether that exit was an error. `stop()` sends
    SIGTERM, waits up to STOP_TIMEOUT, then SIGKILL.
    """

    def __init__(self, name: str, body: Callable[[], int]) -> None:
        self.name = name
        self._body = body
        self.pid: int | None = None
        self.exit_status: int | None = None
        self.stopping = False
        self.failed = False  # it exited on its own with an error status
        self.on_exit: Callable[[], None] = lambda: None
        self._exited: asyncio.Event | None = None
        self._pidfd: int | None = None

    def fork(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _die_with_parent()
            code = 1
            try:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                code = self._body()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("%s failed", self.name)
            finally:
                logging.shutdown()
                os._exit(code)
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        log.info("%s runs in process %d", self.name, pid)

    async def start(self) -> None:
        assert self.pid is not None and self._pidfd is not None, "fork() first"
        self._exited = asyncio.Event()
        asyncio.get_running_loop().add_reader(self._pidfd, self._reap)
        self._reap_if_gone()

    def _reap_if_gone(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == self.pid:
            self._record(status)

    def _reap(self) -> None:
        try:
            self._record(os.waitpid(self.pid, 0)[1])
        except ChildProcessError:  # reaped elsewhere: the status is lost, the exit is not
            self._record(1 << 8)

    def _record(self, wait_status: int) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self.exit_status is None:
            self.exit_status = os.waitstatus_to_exitcode(wait_status)
        if self._exited is not None:
            self._exited.set()
        if not self.stopping:
            self.failed = self.exit_status != 0
            if self.exit_status:
                log.error("%s (process %d) exited with status %d; stopping", self.name, self.pid, self.exit_status)
            else:
                log.info("%s (process %d) stopped; stopping the rest", self.name, self.pid)
            self.on_exit()

    def terminate(self) -> None:
        """Stop the child without an event loop (the parent failed before it could watch it): SIGTERM, reap."""
        if self.pid is None or self.exit_status is not None:
            return
        self.stopping = True
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.exit_status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        except (ProcessLookupError, ChildProcessError):
            pass
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def stop(self) -> None:
        self.stopping = True
        if self.pid is None or self.exit_status is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self._exited.wait(), wait)
                return
            except TimeoutError:
                log.warning("%s (process %d) did not stop in %.0f s after %s", self.name, self.pid, wait,
                            sig.name)
