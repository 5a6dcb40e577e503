# The lab's processes: start one (optionally inside a namespace) with its log, and stop exactly the ones we started.
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Proc:
    name: str
    pid: int
    start_time: int  # /proc/<pid>/stat field 22: tells our process from a later one with the same pid
    namespace: str | None
    argv: list[str]
    log: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Proc:
        return cls(**d)


def start_time(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_running(proc: Proc) -> bool:
    if start_time(proc.pid) != proc.start_time:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def inherited_env() -> dict[str, str]:
    """The environment a lab process gets: ours without PROVNET_* (PROVNET_STATE_PATH and the like outrank the
    config file the lab gives each process, and would send it to another state directory)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROVNET_")}


def spawn(name: str, argv: Sequence[str], log_dir: Path, namespace: str | None = None,
          env: dict[str, str] | None = None) -> Proc:
    """Start `argv` (in `namespace` via `ip netns exec`, which execs it: the pid is the program's own)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    full = ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)
    with open(log, "ab") as fh:
        popen = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**inherited_env(), **(env or {})})
    st = None
    for _ in range(50):
        st = start_time(popen.pid)
        if st is not None:
            break
        time.sleep(0.01)
    return Proc(name, popen.pid, st or 0, namespace, list(argv), str(log))


def stop_pid(pid: int, expected_start: int | None, grace: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds, only if `pid` is still the process that started at
    `expected_start` (None: any process with that pid, for processes found inside our namespaces)."""
    st = start_time(pid)
    if st is None or (expected_start is not None and st != expected_start):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if start_time(pid) != st or _zombie(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(proc: Proc) -> bool:
    return stop_pid(proc.pid, proc.start_time)
