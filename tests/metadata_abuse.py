# A hostile VM and its neighbours, as scripts run inside VM namespaces (Debian's python3, no provnet): the abuser
# holds, floods, trickles or never reads connections to 169.254.169.254; a victim measures its own requests.
from __future__ import annotations

import json
import subprocess

from metadata_chain import Topology

# argv: mode (hold | flood | loris | noread), connections, seconds. Prints one JSON line when its connections are
# in place ({"open": n, "refused": n, "failed": n}), then keeps at it for `seconds` and prints a final line.
ABUSER = r'''
import json, socket, sys, time
mode, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
addr = ("169.254.169.254", 80)
req = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
held, refused, failed, sent = [], 0, 0, 0
def refused_or_closed(s):
    s.setblocking(False)
    try:
        s.recv(1 << 16)   # an answer before any request was sent (429/503), or the close
    except BlockingIOError:
        return False
    except OSError:
        pass
    return True
if mode == "flood":
    print(json.dumps({"open": 0, "refused": 0, "failed": 0}), flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s = socket.create_connection(addr, 5)
            s.sendall(req)
            s.close()
            sent += 1
        except OSError:
            failed += 1
    print(json.dumps({"connections": sent, "failed": failed}), flush=True)
    sys.exit(0)
for _ in range(count):
    try:
        s = socket.create_connection(addr, 5)
    except OSError:
        failed += 1
        continue
    held.append(s)
deadline = time.monotonic() + 2   # the refusals arrive at once; give them a moment on a loaded machine
while time.monotonic() < deadline:
    time.sleep(0.2)
still = []
for s in held:
    if refused_or_closed(s):
        refused += 1
        s.close()
    else:
        still.append(s)
held = still
print(json.dumps({"open": len(held), "refused": refused, "failed": failed}), flush=True)
end = time.monotonic() + seconds
byte = 0
while time.monotonic() < end:
    if mode == "loris":          # one byte a second on every connection
        for s in held:
            try:
                s.send(req[byte % len(req):byte % len(req) + 1])
            except OSError:
                pass
        byte += 1
        time.sleep(1)
    elif mode == "noread":       # pipeline as fast as the proxy takes it, never read an answer
        for s in held:
            try:
                sent += s.send(req * 64)
            except OSError:
                pass
        time.sleep(0.01)
    else:
        time.sleep(0.5)
print(json.dumps({"open": len(held), "sent": sent}), flush=True)
'''

# argv: seconds, expected substring, keepalive (0|1), rate (requests a second; 0: one after another). A new
# connection each (as cloud-init's url_helper) or one kept-alive connection; prints {"ok": n, "errors": [...],
# "latencies": [...]}.
VICTIM = r'''
import json, socket, sys, time
seconds, expect, keep, rate = float(sys.argv[1]), sys.argv[2].encode(), sys.argv[3] == "1", float(sys.argv[4])
req = b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
ok, errors, lat = 0, [], []
sock = None
start = time.monotonic()
end = start + seconds
sent = 0
while time.monotonic() < end:
    if rate:
        due = start + sent / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
    sent += 1
    t = time.perf_counter()
    try:
        if sock is None:
            sock = socket.create_connection(("169.254.169.254", 80), 10)
            sock.settimeout(10)
        sock.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed")
            body += chunk
        if not head.startswith(b"HTTP/1.1 200") or expect not in body:
            errors.append(head.split(b"\r\n")[0].decode())
        else:
            ok += 1
            lat.append(time.perf_counter() - t)
    except OSError as exc:
        errors.append(repr(exc))
        sock and sock.close()
        sock = None
        continue
    if not keep:
        sock.close()
        sock = None
print(json.dumps({"ok": ok, "errors": errors[:20], "error_count": len(errors), "latencies": lat}))
'''


def start_abuser(topo: Topology, vm: str, mode: str, connections: int, seconds: float) -> tuple[subprocess.Popen,
                                                                                                   dict]:
    """Start the abuser; returns it once its connections are in place, with what it got."""
    proc = subprocess.Popen(topo.exec_args(vm, "/usr/bin/python3", "-c", ABUSER, mode, str(connections),
                                           str(seconds)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"the abuser failed: {proc.stderr.read()[-2000:]}")
    return proc, json.loads(line)


def run_victim(topo: Topology, vm: str, seconds: float, expect: str, keepalive: bool = False,
               rate: float = 0) -> dict:
    proc = subprocess.run(topo.exec_args(vm, "/usr/bin/python3", "-c", VICTIM, str(seconds), expect,
                                         "1" if keepalive else "0", str(rate)),
                          capture_output=True, text=True, timeout=seconds + 60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def start_victim(topo: Topology, vm: str, seconds: float, expect: str, keepalive: bool = False,
                 rate: float = 0) -> subprocess.Popen:
    return subprocess.Popen(topo.exec_args(vm, "/usr/bin/python3", "-c", VICTIM, str(seconds), expect,
                                           "1" if keepalive else "0", str(rate)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def victim_result(proc: subprocess.Popen, timeout: float) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out)


def stop(proc: subprocess.Popen) -> dict | None:
    """End an abuser early (or collect its last line); never leaves it running."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None
