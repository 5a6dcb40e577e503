# Test helper: a PostgreSQL server of the test's own (initdb in a temp dir, a unix socket any namespace can reach),
# so a test can stop, freeze (SIGSTOP) and restart it without touching the shared server other tests use.
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import need, unique

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/nonexistent"))


class PrivatePostgres:
    """initdb + postgres as the `postgres` user, listening only on a unix socket in `directory`."""

    def __init__(self, directory: Path, database: str | None = None, reuse: bool = False) -> None:
        need((BIN / "initdb").exists(), "needs PostgreSQL's server binaries (apt-get install postgresql)")
        need(os.geteuid() == 0, "needs root to run PostgreSQL as the postgres user")
        self.directory = directory
        self.data = directory / "data"
        self.socket_dir = directory / "sock"
        self.proc: subprocess.Popen | None = None
        self.user = pwd.getpwnam("postgres")
        self.database = database or unique("db")
        directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (directory, self.socket_dir):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        if not reuse:  # reuse: a data directory an earlier run made (a benchmark's store)
            subprocess.run([str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "provnet",
                            "--no-sync"], check=True, capture_output=True, user="postgres", timeout=120)
        self.start()
        if not reuse:
            subprocess.run([str(BIN / "createdb"), "-h", str(self.socket_dir), "-U", "provnet", self.database],
                           check=True, capture_output=True, user="postgres", timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://provnet@/{self.database}?host={self.socket_dir}"

    def start(self) -> None:
        """Start the server (again) and wait until it accepts connections."""
        log = open(self.directory / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir), "-c", "listen_addresses=",
             "-c", "fsync=off"], user="postgres", stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run([str(BIN / "pg_isready"), "-q", "-h", str(self.socket_dir)]).returncode != 0:
            assert self.proc.poll() is None, (self.directory / "postgres.log").read_text()
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """A fast shutdown (what `pg_ctl stop -m fast` does): connections are cut, the server is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)
        self.proc = None

    def processes(self) -> list[int]:
        """The postmaster and every process it started (each backend is a session leader of its own, so one
        process group does not hold them all)."""
        assert self.proc is not None
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        found = [self.proc.pid]
        for pid in found:
            found.extend(child for child, parent in parents.items() if parent == pid)
        return found

    def freeze(self) -> None:
        """SIGSTOP the whole server (postmaster first, then every backend): connections stay open, nothing
        answers."""
        self._frozen = self.processes()
        for pid in self._frozen:
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in getattr(self, "_frozen", []):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self._frozen = []

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
