# Differential fuzz of the metadata path's HTTP edge: seeded mutations of real requests against the real proxy,
# agent and API processes, and mutated upstream responses against the upstream client, each compared with h11.
#
# One command (the full run: 1,000,000 requests at the proxy, 100,000 each at the agent and the API, 200,000
# upstream responses; about 15-30 minutes on 2 cores):
#   .venv/bin/python benchmarks/fuzz_http.py
#   .venv/bin/python benchmarks/fuzz_http.py --scale 0.01     # smoke: 1 % of each
#
# Every case is one connection: the bytes are sent (whole, or in pieces), the client half-closes, and everything the
# server answers until it closes is compared with what h11 (the strict pure-Python HTTP/1.1 library) and provnet's
# stated rules allow for the same bytes (tests/http_oracle.py): each request h11 accepts answered by the service,
# each one it refuses refused by the edge (400/413/431/501/505) and the connection closed, nothing more. A case with
# no close within 10 s is a hang. The three processes' logs are searched for tracebacks. Exit status 1 on any
# failure, hang or traceback.
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from http_oracle import (  # noqa: E402  (test helpers: the reference and the mutations)
    REQUEST_TOKENS,
    REQUESTS,
    RESPONSE_TOKENS,
    RESPONSES,
    Bad,
    Incomplete,
    Resp,
    compare_answers,
    compare_response,
    expect_requests,
    expect_response,
    mutate,
    split_answers,
)
from metadata_bootstorm import SECRET, Procs, free_port, prepare_store, vm_ip, wait_http, wait_unix  # noqa: E402

from provnet.metadata.upstream import Target, Upstream, UpstreamTimeout, UpstreamUnavailable  # noqa: E402

DEADLINE = 10.0  # seconds for one case's answers and close


class Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cases = 0
        self.failures: list[tuple[bytes, str]] = []
        self.hangs = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.started = time.monotonic()
        self.seconds = 0.0

    def fail(self, data: bytes, why: str) -> None:
        self.failures.append((data, why))

    def row(self) -> dict:
        return {"target": self.name, "cases": self.cases, "failures": len(self.failures), "hangs": self.hangs,
                "cases_per_s": round(self.cases / self.seconds) if self.seconds else 0,
                "outcomes": dict(self.kinds.most_common(12))}


async def one_request_case(open_conn, data: bytes, pieces: list[int], tally: Tally) -> None:
    expected = expect_requests(data)
    reader, writer = await open_conn()
    try:
        edges = [0, *pieces, len(data)]
        for a, b in zip(edges, edges[1:], strict=False):
            writer.write(data[a:b])
            await writer.drain()
            if len(edges) > 2:
                await asyncio.sleep(0)
        if writer.can_write_eof():
            writer.write_eof()
        stream = await asyncio.wait_for(reader.read(-1), DEADLINE)
    except TimeoutError:
        tally.hangs += 1
        tally.fail(data, "hang: no close within the deadline")
        return
    except ConnectionError:
        stream = b""  # refused and reset before all was sent: what was answered is compared below
    finally:
        writer.close()
    answers = split_answers(stream, [getattr(e, "method", "") for e in expected])
    failure = answers if isinstance(answers, str) else compare_answers(expected, answers)
    if failure:
        tally.fail(data, failure)
    elif not isinstance(answers, str):
        tally.kinds[" ".join(f"{a.status}{'' if a.app else 'e'}" for a in answers[:3]) or "none"] += 1


async def request_fuzz(tally: Tally, open_conn, count: int, seed: int, concurrency: int, extra: bytes = b"") -> None:
    rng = random.Random(seed)
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            data, _ = mutate(rng, REQUESTS, REQUEST_TOKENS, extra)
            pieces = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1))) if rng.random() < 0.2 and \
                len(data) > 1 else []
            tally.cases += 1
            try:
                await one_request_case(open_conn, data, pieces, tally)
            except OSError as exc:
                tally.fail(data, f"client error {exc!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    tally.seconds = time.monotonic() - tally.started


async def upstream_fuzz(tally: Tally, count: int, seed: int, path: str) -> collections.Counter:
    """Mutated responses from a unix socket to the real Upstream pool; `stricter` counts refusals h11 would take."""
    rng = random.Random(seed)
    cases: dict[str, tuple[bytes, bool]] = {}
    stricter: collections.Counter[str] = collections.Counter()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            data, keep_open = cases[head.split(b" ")[1].decode()]
            writer.write(data)
            if keep_open:
                await asyncio.sleep(DEADLINE)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # (cancelled: the run ended while this answer was held open; asyncio would print it as an error)
        writer.close()

    server = await asyncio.start_unix_server(upstream, path)
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            data, mutated = mutate(rng, RESPONSES, RESPONSE_TOKENS)
            head_only = rng.random() < 0.15
            keep_open = rng.random() < 0.3 and not isinstance(expect_response(data, head_only, False), Incomplete)
            expected = expect_response(data, head_only, eof=not keep_open)
            cases[f"/{i}"] = (data, keep_open)
            up = Upstream(Target(unix_path=path), timeout=DEADLINE)
            tally.cases += 1
            try:
                msg = await up.request("HEAD" if head_only else "GET", f"/{i}", [("Host", "x")])
                got: Resp | Bad = Resp(msg.status, msg.body)
            except UpstreamTimeout as exc:
                got = Bad(str(exc))
                if not isinstance(expected, Incomplete):
                    tally.hangs += 1
                    tally.fail(data, f"hang: h11 has {expected} without the close, the client waited")
            except UpstreamUnavailable as exc:
                got = Bad(str(exc))
            finally:
                await up.close()
                del cases[f"/{i}"]
            failure, refused = compare_response(expected, got, mutated)
            if failure:
                tally.fail(data, failure)
            if refused:
                stricter[refused[:70]] += 1
            tally.kinds["response" if isinstance(got, Resp) else "refused"] += 1

    await asyncio.gather(*(worker() for _ in range(16)))
    server.close()
    tally.seconds = time.monotonic() - tally.started
    return stricter


def start(db_url: str, workdir: Path) -> tuple[Procs, int, str, int, str]:
    """provnet metadata-api and metadata-agent as processes: (procs, the proxy's port to be, the agent's socket,
    the API's port, the state directory)."""
    state = tempfile.mkdtemp(prefix="pnf-", dir="/tmp")
    sock = f"{state}/metadata_proxy"
    api_port, proxy_port = free_port(), free_port()
    conf = workdir / "provnet.conf"
    conf.write_text(f"[DEFAULT]\nmetadata_proxy_shared_secret = {SECRET}\nnova_metadata_port = {api_port}\n"
                    f"metadata_listen_port = {api_port}\n")
    base = ["--config-file", str(conf), "--state-path", state, "--db", db_url]
    procs = Procs(workdir, state)
    procs.start("api", *base, "metadata-api")
    procs.start("agent", *base, "metadata-agent", "--socket", sock)
    return procs, proxy_port, sock, api_port, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proxy", type=int, default=1_000_000, help="mutated requests at the proxy")
    parser.add_argument("--agent", type=int, default=100_000, help="mutated requests at the agent's unix socket")
    parser.add_argument("--api", type=int, default=100_000, help="mutated requests at the metadata API")
    parser.add_argument("--upstream", type=int, default=200_000, help="mutated responses to the upstream client")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (0.01: a smoke run)")
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--store-dir", default="/var/tmp/provnet-bench")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    vms = 256
    db_url, meta = prepare_store(Path(args.store_dir), vms, vms)
    workdir = Path(tempfile.mkdtemp(prefix="pn-fuzz-"))
    procs, proxy_port, sock, api_port, state = start(db_url, workdir)
    base = ["--config-file", str(workdir / "provnet.conf"), "--state-path", state, "--db", db_url]
    procs.start("proxy", *base, "metadata-proxy", "--router-id", meta["router_id"], "--bind", "127.0.0.1",
                "--port", str(proxy_port), "--socket", sock)
    tallies: list[Tally] = []
    stricter: collections.Counter[str] = collections.Counter()
    try:
        wait_http(api_port)
        wait_unix(sock)
        wait_http(proxy_port)
        n = {k: max(1, int(getattr(args, k) * args.scale)) for k in ("proxy", "agent", "api", "upstream")}
        counter = iter(range(1 << 62))

        def from_vm():  # each case from one of the VMs' own addresses, so valid requests reach the API
            return asyncio.open_connection("127.0.0.1", proxy_port, local_addr=(vm_ip(next(counter) % vms), 0))

        extra = f"X-Forwarded-For: {vm_ip(0)}\r\nX-Neutron-Router-ID: {meta['router_id']}\r\n".encode()
        plan = [("proxy", from_vm, n["proxy"], b""),
                ("agent", lambda: asyncio.open_unix_connection(sock), n["agent"], extra),
                ("api", lambda: asyncio.open_connection("127.0.0.1", api_port), n["api"], b"")]
        for i, (name, opener, count, headers) in enumerate(plan):
            tally = Tally(name)
            tallies.append(tally)
            print(f"{name}: {count} mutated requests ...", flush=True)
            asyncio.run(request_fuzz(tally, opener, count, args.seed + i, args.concurrency, headers))
            print(f"{name}: {tally.cases} cases, {len(tally.failures)} failures, {tally.hangs} hangs, "
                  f"{tally.cases / tally.seconds:.0f} cases/s", flush=True)
        tally = Tally("upstream client")
        tallies.append(tally)
        print(f"upstream client: {n['upstream']} mutated responses ...", flush=True)
        stricter = asyncio.run(upstream_fuzz(tally, n["upstream"], args.seed + 7, str(workdir / "up.sock")))
        print(f"upstream client: {tally.cases} cases, {len(tally.failures)} failures, {tally.hangs} hangs",
              flush=True)
    finally:
        procs.stop()
    tracebacks = {name: (workdir / f"{name}.log").read_text(errors="replace").count("Traceback")
                  for name in ("proxy", "agent", "api")}
    lines = {name: len((workdir / f"{name}.log").read_text(errors="replace").splitlines())
             for name in ("proxy", "agent", "api")}
    print("\n| target | cases | failures | hangs | tracebacks | log lines | cases/s |")
    print("|---|---|---|---|---|---|---|")
    for t in tallies:
        key = t.name.split()[0]
        print(f"| {t.name} | {t.cases:,} | {len(t.failures)} | {t.hangs} | {tracebacks.get(key, '-')} | "
              f"{lines.get(key, '-')} | {t.cases / t.seconds:,.0f} |")
    print(json.dumps({"seed": args.seed, "results": [t.row() for t in tallies], "tracebacks": tracebacks,
                      "upstream_stricter_than_h11": dict(stricter.most_common(15))}, indent=1))
    for t in tallies:
        for data, why in t.failures[:5]:
            print(f"FAIL {t.name}: {why}\n     {data[:300]!r}")
    print(f"logs: {workdir}")
    if any(t.failures or t.hangs for t in tallies) or any(tracebacks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
