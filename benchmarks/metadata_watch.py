# Watch (GCE's long-poll) at scale on the real chain (metadata-proxy -> metadata-agent -> metadata-api, three
# processes): N guests, each from its own loopback address, wait on meta_data.json; prints the memory the waiting
# costs each process (RSS before and after, per waiter), how long after a property change (committed by another
# process) its guest's answer arrives, and that the per-instance and total bounds refuse with 429.
#
#   .venv/bin/python benchmarks/metadata_watch.py --guests 1000
#
# Uses the boot-storm store (benchmarks/metadata_bootstorm.py builds it: --ports >= --guests instances).
from __future__ import annotations

import argparse
import asyncio
import re
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metadata_bootstorm import (  # noqa: E402
    PROVNET,
    SECRET,
    Procs,
    free_port,
    prepare_store,
    vm_ip,
    wait_http,
    wait_unix,
)

PATH = "/openstack/latest/meta_data.json"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(re.search(r"VmRSS:\s+(\d+)", fh.read()).group(1))


async def request(port: int, ip: str, target: str) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ip, 0), limit=1 << 20)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def run(port: int, guests: int, instances: list[str], db_url: str, pids: dict[str, int],
              per_instance: int) -> None:
    etags = []
    for i in range(guests):
        status, headers, _ = await request(port, vm_ip(i), PATH)
        assert status == 200, status
        etags.append(headers["etag"].strip('"'))
    before = {name: rss_kb(pid) for name, pid in pids.items()}
    started = time.monotonic()
    waits = []
    for i in range(guests):  # 100 new guests at a time: the agent's unix socket backlog is net.core.somaxconn
        waits.append(asyncio.ensure_future(request(port, vm_ip(i), f"{PATH}?wait_for_change=true"
                                                                   f"&last_etag={etags[i]}&timeout_sec=50")))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 60
    while True:  # wait until the API holds every waiter (its /metrics are not reachable here: use RSS growth)
        done = sum(w.done() for w in waits)
        assert done == 0, f"{done} waits answered early"
        if time.monotonic() - started > 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    after = {name: rss_kb(pid) for name, pid in pids.items()}
    for name in pids:
        grown = after[name] - before[name]
        print(f"{name:6s} RSS {before[name] / 1024:.1f} MiB -> {after[name] / 1024:.1f} MiB with {guests} waiting "
              f"guests: +{grown / 1024:.1f} MiB ({grown * 1024 / guests / 1024:.1f} KiB per waiter)", flush=True)
    # the per-instance bound: guest 0 already waits once; more waits of the same instance up to the bound, then 429
    extra = [asyncio.ensure_future(request(port, vm_ip(0), f"{PATH}?wait_for_change=true&last_etag={etags[0]}"
                                                           "&timeout_sec=50")) for _ in range(per_instance - 1)]
    await asyncio.sleep(1)
    status, _, body = await request(port, vm_ip(0), f"{PATH}?wait_for_change=true&last_etag={etags[0]}")
    print(f"wait number {per_instance + 1} of one instance: {status} ({body.decode().strip().splitlines()[-1]})")
    # a property change committed by another process (this one, through the registry) wakes its guest
    from provnet.registry import open_registry

    registry = open_registry(db_url)
    target = guests // 2
    changed = time.monotonic()
    registry.update_instance(instances[target], {"metadata": {"changed": str(time.time())}})
    status, headers, body = await waits[target]
    woke = time.monotonic() - changed
    print(f"guest {target}: answered {woke * 1000:.0f} ms after the property change was committed "
          f"(status {status}, new ETag {headers.get('etag') != etags[target]})", flush=True)
    others = sum(w.done() for i, w in enumerate(waits) if i != target)
    print(f"other guests answered meanwhile: {others} (expected 0)")
    for w in waits + extra:
        w.cancel()
    registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--store-dir", default="/var/tmp/provnet-bench")
    parser.add_argument("--per-instance", type=int, default=8)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it: 3 sockets per guest in all
    db_url, meta = prepare_store(Path(args.store_dir), max(2000, args.guests), args.guests)
    workdir = Path(__import__("tempfile").mkdtemp(prefix="pn-watch-"))
    api_port, proxy_port = free_port(), free_port()
    state = __import__("tempfile").mkdtemp(prefix="pnw-", dir="/tmp")
    sock = f"{state}/metadata_proxy"
    conf = workdir / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = {SECRET}\nnova_metadata_port = {api_port}\n"
                    f"metadata_listen_port = {api_port}\n[metadata]\nwatch_max_per_instance = {args.per_instance}\n"
                    f"watch_max_total = {args.guests + args.per_instance}\n")
    base = ["--config-file", str(conf), "--state-path", state, "--db", db_url]
    procs = Procs(workdir, state)
    procs.start("api", *base, "metadata-api")
    procs.start("agent", *base, "metadata-agent", "--socket", sock)
    procs.start("proxy", *base, "metadata-proxy", "--router-id", meta["router_id"], "--bind", "127.0.0.1",
                "--port", str(proxy_port), "--socket", sock)
    try:
        wait_http(api_port)
        wait_unix(sock)
        wait_http(proxy_port)
        pids = {name: p.pid for name, p in procs.by_name.items()}
        asyncio.run(run(proxy_port, args.guests, meta["instances"], db_url, pids, args.per_instance))
    finally:
        procs.stop()
    print(f"logs: {workdir} ({PROVNET})")


if __name__ == "__main__":
    main()
