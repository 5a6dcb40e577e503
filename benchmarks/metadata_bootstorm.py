# Boot storm on the metadata path: simulated cloud-init clients replay the first-boot URL sequence through
# proxy -> agent -> API, with many ports registered; the haproxy -> nginx anchor is measured in the same run.
#
# One command (smoke size shown; the full run is --ports 100000 --boots 1000 --concurrency 64 --duration 15):
#   .venv/bin/python benchmarks/metadata_bootstorm.py --ports 2000 --boots 100 --concurrency 16 --duration 3
# Session tokens (issue 14): `--modes separate,tokens --rounds 3` alternates the storm without and with IMDSv2
# tokens (one PUT per boot, then the same 28 GETs carrying the token) on the same processes' code, and prints the
# ratio; network mode (issue 12): `--modes separate,network,anchor --rounds 3` runs the same three processes with the
# proxy identifying the network (--network-id, X-Neutron-Network-ID) instead of the router, and prints both storms
# against the anchor; `--rotate` rotates metadata_proxy_shared_secret during each token storm in the README's order
# (SIGHUP to the API and the agent at 25 %, 50 % and 75 % of the boots) and counts every failed request.
#
# What it does:
# 1. A SQLite store with --ports ports on one flat network (subnet 127.0.0.0/15, so every simulated VM has its own
#    loopback source address) and a router on it; instances exist for the booting VMs (and for 127.0.0.1, used
#    by wrk). The store is kept in --store-dir and reused by later runs of the same size (100,000 ports take
#    minutes to register through the Registry API).
# 2. For each mode -- `separate` (provnet metadata-api, metadata-agent, metadata-proxy as three processes),
#    `serve` (provnet serve + metadata-proxy) and `anchor` (/work/shared/bench/http/anchor.sh: haproxy -> nginx over
#    a unix socket, static body) -- it runs:
#    - the boot storm: --boots VMs, --concurrency at a time, each on one keep-alive connection from its own address,
#      replaying cloud-init's first boot (reference nova-metadata.md section 3, 28 GETs) and checking every status
#      and, for provnet, that meta_data.json carries the VM's own uuid; prints boots, errors, requests/s, p50/p99;
#    - wrk (-c --concurrency, keep-alive, one VM's meta_data.json) for --duration seconds: requests/s, p50/p99.
# Targets (issue 3): >= 3,000 requests/s with keep-alive and p99 <= 50 ms at 64 concurrent clients; 1,000 boots with
# zero errors. Numbers depend on the machine being otherwise idle: run it alone.
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROVNET = str(Path(sys.executable).parent / "provnet")
ANCHOR = os.environ.get("PROVNET_HTTP_ANCHOR", "/work/shared/bench/http/anchor.sh")
SECRET = "bench-secret"
NET = ipaddress.ip_network("127.0.0.0/15")
FIRST_VM = int(NET.network_address) + 256  # 127.0.1.0 onwards; 127.0.0.1 is wrk's VM, 127.0.0.2 the router port

SEQUENCE = [
    "/openstack", "/openstack", "/openstack/2018-08-27/meta_data.json", "/openstack/2018-08-27/user_data",
    "/openstack/2018-08-27/vendor_data.json", "/openstack/2018-08-27/vendor_data2.json",
    "/openstack/2018-08-27/network_data.json", "/latest/meta-data/", "/latest/meta-data/block-device-mapping/",
    "/latest/meta-data/block-device-mapping/ami", "/latest/meta-data/block-device-mapping/root",
    "/latest/meta-data/placement/", "/latest/meta-data/placement/availability-zone",
    "/latest/meta-data/public-keys/", "/latest/meta-data/public-keys/0/openssh-key",
] + [f"/latest/meta-data/{leaf}" for leaf in (
    "ami-id", "ami-launch-index", "ami-manifest-path", "hostname", "instance-action", "instance-id",
    "instance-type", "local-hostname", "local-ipv4", "public-hostname", "public-ipv4", "reservation-id",
    "security-groups")]


def vm_ip(index: int) -> str:
    return str(ipaddress.ip_address(FIRST_VM + index))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the store ---------------------------------------------------------------------------------------------

def prepare_store(store_dir: Path, ports: int, boots: int) -> tuple[str, dict]:
    """A SQLite store with `ports` VM ports; reused when a previous run left one of the same size."""
    from provnet.registry import open_registry

    store_dir.mkdir(parents=True, exist_ok=True)
    db = store_dir / f"metadata-{ports}.sqlite"
    meta_path = store_dir / f"metadata-{ports}.json"
    if db.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("boots", 0) >= boots:
            if "network_id" not in meta:  # a store made before network mode was measured
                reg = open_registry(f"sqlite:///{db}")
                meta["network_id"] = reg.list_networks({"name": ["bench"]})[0].id
                reg.close()
                meta_path.write_text(json.dumps(meta))
            print(f"store: reusing {db} ({ports} ports)", flush=True)
            return f"sqlite:///{db}", meta
        db.unlink()
    for stale in store_dir.glob(f"metadata-{ports}.sqlite*"):
        stale.unlink()
    url = f"sqlite:///{db}"
    registry = open_registry(url)
    started = time.monotonic()
    net = registry.create_network({"name": "bench", "provider:network_type": "flat",
                                   "provider:physical_network": "physbench"})
    subnet = registry.create_subnet({"network_id": net.id, "cidr": str(NET), "ip_version": 4,
                                     "gateway_ip": "127.0.0.2", "enable_dhcp": False,
                                     "host_routes": [{"destination": "0.0.0.0/0", "nexthop": "127.0.0.3"}]})
    router = registry.create_router({"name": "bench-router"})
    registry.add_router_interface(router.id, subnet_id=subnet.id)
    instances: list[str] = []

    def add(ip: str, index: int, with_instance: bool) -> None:
        device = f"00000000-0000-4000-8000-{index:012d}"
        if with_instance:
            inst = registry.create_instance({"name": f"vm{index}", "hostname": f"vm{index}",
                                             "user_data": "I2Nsb3VkLWNvbmZpZwo=",
                                             "key_pairs": [{"name": "k", "data": "ssh-ed25519 AAAAbench k"}]})
            device = inst.id
        registry.create_port({"network_id": net.id, "device_id": device, "device_owner": "compute:nova",
                              "fixed_ips": [{"subnet_id": subnet.id, "ip_address": ip}]})
        if with_instance:
            instances.append(device)

    add("127.0.0.1", 999_999_999, True)
    wrk_instance = instances.pop()
    for i in range(ports):
        add(vm_ip(i), i, i < boots)
        if i and i % 5000 == 0:
            print(f"store: {i} ports ({time.monotonic() - started:.0f} s)", flush=True)
    registry.close()
    meta = {"router_id": router.id, "network_id": net.id, "boots": boots, "instances": instances,
            "wrk_instance": wrk_instance}
    meta_path.write_text(json.dumps(meta))
    print(f"store: {ports} ports registered in {time.monotonic() - started:.0f} s", flush=True)
    return url, meta


# ---- the processes -----------------------------------------------------------------------------------------

class Procs:
    def __init__(self, workdir: Path, state: str) -> None:
        self.workdir = workdir
        self.state = state  # removed by stop()
        self.procs: list[subprocess.Popen] = []
        self.by_name: dict[str, subprocess.Popen] = {}
        self.confs: dict[str, Path] = {}
        self.api_port = 0

    def start(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([PROVNET, *args], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.by_name[name] = proc
        log.close()

    def reload(self, name: str, secret: str, previous: str = "") -> None:
        """Rewrite one process's configuration file and SIGHUP it."""
        write_conf(self.confs[name], self.api_port, secret, previous)
        self.by_name[name].send_signal(signal.SIGHUP)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        shutil.rmtree(self.state, ignore_errors=True)


def wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def wait_unix(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{path} did not appear")


def write_conf(path: Path, api_port: int, secret: str, previous: str = "") -> None:
    previous_line = f"metadata_proxy_shared_secret_previous = {previous}\n" if previous else ""
    path.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = {secret}\nnova_metadata_port = {api_port}\n"
                    f"{previous_line}metadata_listen_port = {api_port}\nbind_port = {free_port()}\n")


def start_provnet(mode: str, db_url: str, router_id: str, workdir: Path, network_id: str = "") -> tuple[Procs, int]:
    api_port, proxy_port = free_port(), free_port()
    state = tempfile.mkdtemp(prefix="pnb-", dir="/tmp")
    sock = f"{state}/metadata_proxy"
    conf = workdir / "provnet.conf"
    write_conf(conf, api_port, SECRET)
    base = ["--config-file", str(conf), "--state-path", state, "--db", db_url]
    procs = Procs(workdir, state)
    procs.api_port = api_port
    if mode in ("separate", "tokens", "network"):  # the same processes; the API and the agent read their own file
        api_conf, agent_conf = workdir / "api.conf", workdir / "agent.conf"
        write_conf(api_conf, api_port, SECRET)
        write_conf(agent_conf, api_port, SECRET)
        procs.confs = {"api": api_conf, "agent": agent_conf}
        procs.start("api", "--config-file", str(api_conf), *base[2:], "metadata-api")
        procs.start("agent", "--config-file", str(agent_conf), *base[2:], "metadata-agent", "--socket", sock)
    else:
        procs.start("serve", *base, "serve")
    scope = ["--network-id", network_id] if mode == "network" else ["--router-id", router_id]
    procs.start("proxy", *base, "metadata-proxy", *scope, "--bind", "127.0.0.1",
                "--port", str(proxy_port), "--socket", sock)
    try:
        wait_http(api_port)
        wait_unix(sock)
        wait_http(proxy_port)
    except BaseException:
        procs.stop()
        raise
    return procs, proxy_port


# ---- the clients -------------------------------------------------------------------------------------------

async def one_boot(port: int, ip: str, instance: str | None, latencies: list[float], tokens: bool = False,
                   failures: list | None = None) -> int:
    """One VM's first boot on a keep-alive connection from its own address; returns the number of errors.
    `tokens`: IMDSv2 first (PUT /latest/api/token), then every GET carries the token."""
    errors = 0
    token_line = ""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0), limit=1 << 20)
    try:
        if tokens:
            started = time.perf_counter()
            writer.write(b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                         b"X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = await reader.readexactly(int(match.group(1))) if match else b""
            latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                if failures is not None:
                    failures.append(("PUT", head[9:12].decode(), body[-120:].decode(errors="replace")))
                return 1 + len(SEQUENCE)  # no token, no boot: every request of it counts as failed
            token_line = f"X-aws-ec2-metadata-token: {body.decode()}\r\n"
        for path in SEQUENCE:
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Cloud-Init/22.4\r\n"
                         f"Accept: */*\r\n{token_line}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = await reader.readexactly(int(match.group(1))) if match else b""
            latencies.append(time.perf_counter() - started)
            if head[9:12] != b"200":
                errors += 1
                if failures is not None:
                    failures.append((path, head[9:12].decode(), body[-120:].decode(errors="replace")))
            elif instance and path.endswith("meta_data.json") and instance.encode() not in body:
                errors += 1
    finally:
        writer.close()
    return errors


async def storm(port: int, boots: int, concurrency: int, instances: list[str] | None, tokens: bool = False,
                rotate=None) -> dict:
    """`rotate(step)` is called (in a thread) when 25, 50 and 75 % of the boots have started."""
    latencies: list[float] = []
    failures: list = []  # (path, status, body tail) of every failed request
    errors = failed = 0
    queue = list(range(boots))
    queue.reverse()
    marks = {boots * q // 4: q for q in (1, 2, 3)} if rotate else {}
    rotations: list[asyncio.Future] = []

    async def worker() -> None:
        nonlocal errors, failed
        while queue:
            i = queue.pop()
            if i in marks:
                rotations.append(asyncio.ensure_future(asyncio.to_thread(rotate, marks[i])))
            try:
                # awaited first, then added: `errors += await ...` would read `errors` before the await and lose
                # what other workers added meanwhile (the storm undercounted its errors before this)
                found = await one_boot(port, vm_ip(i), instances[i] if instances else None, latencies, tokens,
                                       failures)
                errors += found
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                failed += 1
                failures.append(("boot", "connection", repr(exc)))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*rotations)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    by_status: dict[str, int] = {}
    for _, status, _ in failures:
        by_status[status] = by_status.get(status, 0) + 1
    return {"boots": boots, "failed_boots": failed, "errors": errors, "requests": len(latencies),
            "failures_by_status": by_status,
            "rps": len(latencies) / elapsed, "boots_per_s": boots / elapsed, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "seconds": elapsed, "failures": failures[:5]}


def rotation(procs: Procs, log: list[str]):
    """The README's order: 1. the new secret accepted (API: previous = new); 2. signers switch (agent: new; API:
    current = new, previous = old); 3. the old one retired (API: previous empty). Each step is a SIGHUP."""
    new = SECRET + "-rotated"

    def step(n: int) -> None:
        if n == 1:
            procs.reload("api", SECRET, new)
        elif n == 2:
            procs.reload("agent", new)
            time.sleep(0.2)  # the agent has its new secret before the API issues tokens with it
            procs.reload("api", new, SECRET)
        else:
            procs.reload("api", new)
        log.append(f"step {n} at {time.strftime('%H:%M:%S')}")
    return step


def run_wrk(url: str, concurrency: int, duration: int) -> dict:
    if not shutil.which("wrk"):
        return {"error": "wrk not installed"}
    out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    return {"rps": float(rps.group(1)) if rps else float("nan"), "p50_ms": pct("50"), "p99_ms": pct("99"),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ports", type=int, default=100_000)
    parser.add_argument("--boots", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=int, default=15, help="seconds of the wrk run per mode")
    parser.add_argument("--modes", default="separate,serve,anchor")
    parser.add_argument("--rounds", type=int, default=1, help="run the modes this many times, alternating")
    parser.add_argument("--rotate", action="store_true",
                        help="rotate the shared secret during each `tokens` storm (three SIGHUPs)")
    parser.add_argument("--store-dir", default="/var/tmp/provnet-bench")
    args = parser.parse_args()
    if args.boots > args.ports:
        parser.error("--boots cannot exceed --ports")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    db_url, meta = prepare_store(Path(args.store_dir), args.ports, args.boots)
    workdir = Path(tempfile.mkdtemp(prefix="pn-bootstorm-"))
    results: dict[str, dict] = {}
    runs: list[tuple[str, dict]] = []
    for mode in [m for _ in range(args.rounds) for m in args.modes.split(",")]:
        if mode == "anchor":
            if not os.path.exists(ANCHOR):
                print(f"anchor: {ANCHOR} missing, skipped")
                continue
            port = free_port()
            url = subprocess.run(["bash", ANCHOR, "start", str(port)], capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            try:
                wait_http(port)
                boot = asyncio.run(storm(port, args.boots, args.concurrency, None))
                wrk = run_wrk(url + "openstack/2018-08-27/meta_data.json", args.concurrency, args.duration)
            finally:
                subprocess.run(["bash", ANCHOR, "stop"], capture_output=True)
        else:
            procs, port = start_provnet(mode, db_url, meta["router_id"], workdir, meta.get("network_id", ""))
            steps: list[str] = []
            rotate = rotation(procs, steps) if mode == "tokens" and args.rotate else None
            try:
                boot = asyncio.run(storm(port, args.boots, args.concurrency, meta["instances"], mode == "tokens",
                                         rotate))
                if steps:
                    boot["rotation"] = steps
                wrk = run_wrk(f"http://127.0.0.1:{port}/openstack/2018-08-27/meta_data.json", args.concurrency,
                              args.duration)
            finally:
                procs.stop()
        results[mode] = {"bootstorm": boot, "wrk": wrk}
        runs.append((mode, boot))
        print(f"{mode:9s} bootstorm: {boot['boots']} boots, {boot['failed_boots']} failed, {boot['errors']} errors, "
              f"{boot['requests']} requests, {boot['rps']:.0f} req/s, p50 {boot['p50_ms']:.1f} ms, "
              f"p99 {boot['p99_ms']:.1f} ms, {boot.get('boots_per_s', 0):.1f} boots/s"
              + (f", rotated ({len(boot['rotation'])} steps)" if boot.get("rotation") else ""), flush=True)
        if boot.get("failures"):
            print(f"{mode:9s} failed requests by status: {boot['failures_by_status']}; first: "
                  f"{[f[:2] + (f[2].splitlines()[-1] if f[2] else '',) for f in boot['failures']]}", flush=True)
        print(f"{mode:9s} wrk -c{args.concurrency}: {wrk.get('rps', float('nan')):.0f} req/s, "
              f"p50 {wrk.get('p50_ms', float('nan')):.2f} ms, p99 {wrk.get('p99_ms', float('nan')):.2f} ms, "
              f"non-2xx {wrk.get('non_2xx')}, socket errors {wrk.get('socket_errors') or 'none'}", flush=True)
    per_round = len(args.modes.split(","))
    ratios: dict[str, list[float]] = {"separate": [], "network": []}
    for start in range(0, len(runs), per_round):  # each storm against the anchor of its own round
        round_runs = dict(runs[start:start + per_round])
        if "anchor" in round_runs:
            for mode in ratios:
                if mode in round_runs:
                    ratios[mode].append(round_runs[mode]["rps"] / round_runs["anchor"]["rps"])
    for mode, found in ratios.items():
        if found:
            name = "router" if mode == "separate" else "network"
            print(f"{name} mode bootstorm / anchor (same round): median {statistics.median(found):.2f} "
                  f"({', '.join(f'{r:.2f}' for r in found)})", flush=True)
    if ratios["separate"] and ratios["network"]:
        relative = statistics.median(ratios["network"]) / statistics.median(ratios["separate"])
        print(f"network mode / router mode (medians against the anchor): {relative:.2f}", flush=True)
    plain = [b["boots_per_s"] for m, b in runs if m == "separate"]
    tokened = [b["boots_per_s"] for m, b in runs if m == "tokens"]
    if plain and tokened:
        ratio = (sum(tokened) / len(tokened)) / (sum(plain) / len(plain))
        print(f"tokens vs no tokens (separate processes, mean of {len(plain)}+{len(tokened)} storms): "
              f"{sum(tokened) / len(tokened):.1f} against {sum(plain) / len(plain):.1f} boots/s = {ratio:.0%}; "
              f"failed requests with tokens: {sum(b['errors'] + b['failed_boots'] for m, b in runs if m == 'tokens')}",
              flush=True)
    print(json.dumps({"ports": args.ports, "boots": args.boots, "concurrency": args.concurrency,
                      "results": results}, indent=1))
    print(f"logs: {workdir}")


if __name__ == "__main__":
    main()
