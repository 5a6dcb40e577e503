# How a thread waiting for the change feed learns that something committed: this process's own writes, another
# process's (PostgreSQL LISTEN, or inotify on the SQLite files), without reading the store in a loop.
from __future__ import annotations

import ctypes
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class LocalBell:
    """Rung after every commit of this process; each waiting thread holds a pipe that the ring writes to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writers: set[int] = set()

    def ring(self) -> None:
        with self._lock:
            writers = list(self._writers)
        for fd in writers:
            try:
                os.write(fd, b"\0")
            except (BlockingIOError, OSError):  # full (a wake is pending anyway) or closed meanwhile
                pass

    def open(self) -> tuple[int, int]:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with self._lock:
            self._writers.add(w)
        return r, w

    def close(self, pipe: tuple[int, int]) -> None:
        with self._lock:
            self._writers.discard(pipe[1])
        for fd in pipe:
            os.close(fd)


class InotifyWatch:
    """Files of one directory whose name starts with `prefix` (an SQLite database, its -wal and -journal) were
    written or replaced: Linux inotify through libc, no dependency."""

    def __init__(self, path: str) -> None:
        self.directory = os.path.dirname(os.path.abspath(path)) or "/"
        self.prefix = os.fsencode(os.path.basename(path))
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
        if libc.inotify_add_watch(fd, os.fsencode(self.directory), mask) < 0:
            errno = ctypes.get_errno()
            os.close(fd)
            raise OSError(errno, f"cannot watch {self.directory}")
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> bool:
        """Read the pending events; True if one concerns the database's files."""
        relevant = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return relevant
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if name.startswith(self.prefix):
                    relevant = True

    def close(self) -> None:
        os.close(self.fd)


class _PgConn(Protocol):
    """What PgListener uses of a psycopg connection's libpq side."""

    @property
    def socket(self) -> int: ...
    def consume_input(self) -> None: ...
    def notifies(self) -> object | None: ...


class _Connection(Protocol):
    """What PgListener uses of a psycopg connection."""

    autocommit: bool

    @property
    def pgconn(self) -> _PgConn: ...
    def execute(self, query: str) -> object: ...
    def close(self) -> None: ...


class PgListener:
    """A dedicated PostgreSQL connection that LISTENs on the feed's channel; its socket becomes readable when a
    NOTIFY arrives (after the notifying transaction committed)."""

    def __init__(self, connect: Callable[[], _Connection], channel: str) -> None:
        self.conn = connect()
        self.conn.autocommit = True
        self.conn.execute(f"LISTEN {channel}")
        self.fd = self.conn.pgconn.socket

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> bool:
        pgconn = self.conn.pgconn
        pgconn.consume_input()  # raises on a broken connection: the caller reconnects
        got = False
        while pgconn.notifies() is not None:
            got = True
        return got

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # already broken
            pass


class Waiter:
    """What one thread blocks on: the local bell plus, when available, the store's own notification channel.

    `wait(timeout)` returns True when something may have committed (a spurious True is allowed), False at the
    timeout. When the channel cannot be opened or breaks, waits are capped at `fallback` seconds, so a reader
    still sees other processes' changes, just later (logged once).
    """

    def __init__(self, bell: LocalBell, channel: Callable[[], InotifyWatch | PgListener] | None,
                 fallback: float = 1.0) -> None:
        self.bell = bell
        self._open_channel = channel
        self.fallback = fallback
        self._pipe = bell.open()
        self._channel: InotifyWatch | PgListener | None = None
        self._warned = False
        self.notified = 0  # wake-ups by the store's channel (another process committed): observable in tests
        self._reopen()

    def _reopen(self) -> None:
        if self._open_channel is None:
            return
        try:
            self._channel = self._open_channel()
            if self._warned:
                log.info("change notifications restored")
            self._warned = False
        except Exception as exc:
            self._channel = None
            if not self._warned:
                log.warning("change notifications unavailable (%s); checking every %.0f s instead", exc,
                            self.fallback)
                self._warned = True

    def wait(self, timeout: float) -> bool:
        if self._pipe[0] < 0:
            raise OSError("the registry was closed")
        if self._channel is None and self._open_channel is not None:
            self._reopen()
            timeout = min(timeout, self.fallback)
        poller = select.poll()
        poller.register(self._pipe[0], select.POLLIN)
        if self._channel is not None:
            poller.register(self._channel.fileno(), select.POLLIN)
        events = poller.poll(max(0.0, timeout) * 1000)
        woke = False
        for fd, _ in events:
            if fd == self._pipe[0]:
                try:
                    while os.read(fd, 4096):
                        pass
                except BlockingIOError:
                    pass
                woke = True
            elif self._channel is not None:
                try:
                    if self._channel.drain():
                        self.notified += 1
                        woke = True
                except Exception as exc:
                    log.warning("change notifications lost (%s); reconnecting", exc)
                    self._warned = True
                    self._channel.close()
                    self._channel = None
                    woke = True  # something may have been missed: look
        return woke

    def close(self) -> None:
        """Release the pipe and the channel (a thread still polling them wakes with an error and returns)."""
        if self._pipe[0] < 0:
            return
        self.bell.close(self._pipe)
        self._pipe = (-1, -1)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
