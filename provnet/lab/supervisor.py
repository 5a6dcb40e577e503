# The lab's one supervising process (`python -m provnet.lab.supervisor DIR`): every lab service runs under it,
# restarted when it dies, and its truth (pids, restarts, held, failed) is written to DIR/services.json at each change.
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provnet.lab.procs import start_time
from provnet.runtime.supervise import ChildSpec, Supervisor

log = logging.getLogger("provnet.lab.supervisor")
CONTROL = "supervisor.sock"
NOTIFY = "notify.sock"
STATUS = "services.json"
MAX_REQUEST = 64 * 1024
RESTART_GRACE = 10.0  # seconds a service restarted by hand has to stop before SIGKILL


class ControlError(RuntimeError):
    """The supervisor refused a request or cannot be reached; the message says which."""


@dataclass(frozen=True)
class Service:
    """One lab service: `argv` run in `namespace` (None: the machine's own) with `env` added to the supervisor's
    environment, its log in logs/<name>.log."""

    name: str
    argv: Sequence[str]
    namespace: str | None = None
    notify: bool = True  # a provnet server (tells READY and WATCHDOG); False: someone else's program
    env: dict[str, str] = field(default_factory=dict)  # e.g. OS_CLIENT_CONFIG_FILE: the clouds.yaml it reads

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "argv": list(self.argv), "namespace": self.namespace, "notify": self.notify,
                "env": dict(self.env)}

    @classmethod
    def from_json(cls, d: Any) -> Service:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not d["name"] \
                or not isinstance(d.get("argv"), list) or not d["argv"] \
                or not all(isinstance(a, str) for a in d["argv"]) \
                or not isinstance(d.get("namespace"), str | None) or not isinstance(d.get("notify", True), bool) \
                or not isinstance(d.get("env", {}), dict) \
                or not all(isinstance(k, str) and k and "=" not in k and isinstance(v, str)
                           for k, v in d.get("env", {}).items()):
            raise ControlError(f"not a service: {str(d)[:200]}")
        if "/" in d["name"] or d["name"].startswith("."):
            raise ControlError(f"bad service name {d['name']!r}")
        return cls(d["name"], tuple(d["argv"]), d.get("namespace"), d.get("notify", True), dict(d.get("env", {})))

    def command(self) -> list[str]:
        """The process: the kernel stops it when the supervisor dies (setpriv --pdeathsig, kept across exec),
        entered into its network namespace only (nsenter --net: the mounts stay the machine's, as on a host)."""
        inside = ["nsenter", f"--net=/var/run/netns/{self.namespace}"] if self.namespace else []
        return ["setpriv", "--pdeathsig", "TERM", "--", *inside, *self.argv]


class LabSupervisor:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor([], notify_path=str(directory / NOTIFY))
        self.supervisor.on_change = self.write_status
        self.supervisor.on_fatal = lambda: None  # a service that cannot start is shown as failed; the rest go on
        self.services: dict[str, Service] = {}
        self.me = {"pid": os.getpid(), "start_time": start_time(os.getpid())}

    def write_status(self) -> None:
        by_name = {s["name"]: s for s in self.supervisor.status()}
        rows = []
        for name, service in self.services.items():
            row = {**by_name.get(name, {}), **service.to_json(), "log": str(self.dir / "logs" / f"{name}.log")}
            pid = row.get("pid")
            row["start_time"] = start_time(pid) if pid else None
            rows.append(row)
        tmp = self.dir / f"{STATUS}.tmp"
        tmp.write_text(json.dumps({"supervisor": self.me, "written": time.time(), "services": rows}, indent=1))
        os.replace(tmp, self.dir / STATUS)

    def add(self, service: Service) -> None:
        if service.name in self.services:
            raise ControlError(f"a service named {service.name} runs already")
        self.services[service.name] = service
        spec = ChildSpec(service.name, service.command(), env=service.env, notify=service.notify,
                         log=str(self.dir / "logs" / f"{service.name}.log"))
        self.supervisor.add(spec)

    def handle(self, request: Any) -> Any:
        if not isinstance(request, dict):
            raise ControlError("a request is a JSON object")
        op = request.get("op")
        if op == "status":
            return {"services": self.supervisor.status()}
        if op == "add":
            self.add(Service.from_json(request.get("service")))
            return {"ok": True}
        if op in ("hold", "release"):
            name = request.get("name")
            if name not in self.services:
                raise ControlError(f"no service named {name!r}")
            if op == "hold":
                sig = request.get("signal", signal.SIGTERM)
                if sig not in (signal.SIGTERM, signal.SIGKILL):
                    raise ControlError("signal must be 15 (TERM) or 9 (KILL)")
                self.supervisor.hold(name, sig)
            else:
                self.supervisor.release(name)
            return {"ok": True}
        raise ControlError(f"unknown op {op!r}: use status, add, hold, release or restart")

    async def restart(self, request: dict[str, Any]) -> dict[str, Any]:
        """A restart by hand (`provnet lab restart NAME`): SIGTERM, SIGKILL after RESTART_GRACE seconds, started
        again at once; the answer is its new pid."""
        name = request.get("name")
        if name not in self.services:
            raise ControlError(f"no service named {name!r}")
        self.supervisor.hold(name, signal.SIGTERM)
        child = self.supervisor.child(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTART_GRACE
        while child.proc is not None and child.proc.poll() is None:
            if loop.time() > deadline:
                child.proc.kill()
            await asyncio.sleep(0.05)
        self.supervisor.release(name)
        log.info("%s restarted by hand: process %s", name, child.proc.pid if child.proc else "-")
        return {"ok": True, "pid": child.proc.pid if child.proc else None}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if len(line) > MAX_REQUEST:
                raise ControlError("request too long")
            try:
                body = json.loads(line)
                if isinstance(body, dict) and body.get("op") == "restart":
                    answer = await self.restart(body)
                else:
                    answer = self.handle(body)
            except (ValueError, ControlError) as exc:
                answer = {"error": str(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.supervisor.start()
        control = self.dir / CONTROL
        control.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._client, str(control), limit=MAX_REQUEST + 1)
        os.chmod(control, 0o600)
        self.write_status()
        log.info("lab supervisor %d: control socket %s", os.getpid(), control)
        try:
            await stop.wait()
        finally:
            server.close()
            control.unlink(missing_ok=True)
            await self.supervisor.stop()  # SIGTERM to every service, SIGKILL after its grace
            self.write_status()
            log.info("lab supervisor stopped")


def request(directory: Path, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to the lab's supervisor; its answer, or ControlError."""
    path = directory / CONTROL
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(body).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise ControlError(f"the lab's supervisor does not answer on {path}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError(f"the lab's supervisor answered {data[:200]!r}") from None
    if "error" in answer:
        raise ControlError(answer["error"])
    return answer


def read_status(directory: Path) -> dict[str, Any] | None:
    """services.json as last written (None if there is none); liveness is judged by the reader (pid + start)."""
    try:
        return json.loads((directory / STATUS).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m provnet.lab.supervisor LAB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s")
    asyncio.run(LabSupervisor(Path(argv[0])).run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
