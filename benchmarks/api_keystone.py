# Port creates per second through the networking API with Keystone auth (cached tokens, Neutron's policy) against
# noauth, in the same run; and what one policy check costs in provnet's engine and in oslo.policy.
#
#   .venv/bin/python benchmarks/api_keystone.py --slice 2 --rounds 10 --concurrency 16
#
# A real Keystone is started by scripts/keystone.sh (its own virtualenv) in a temporary directory. Two `provnet api`
# processes run side by side, each on a fresh SQLite store (--db postgresql for PostgreSQL): one with
# auth_strategy = noauth, one with keystone. wrk POSTs /v2.0/ports to one, then the other, in short alternating
# slices (--slice seconds, --rounds pairs, the order swapped every round), so that this machine's drift (other
# work, thermal) hits both alike; under keystone as a project member (its token validated once, then cached; the
# create_port policy needs the network's owner, so it is the costlier caller) on the member's own network. The
# figure is the keystone rate over the noauth rate, each summed over all its slices. Target (issue 13): >= 90 %.
# With --profile, py-spy samples both API processes during the slices (stacks holding the GIL, --nonblocking: the
# serial resource of a Python server) and prints each one's GIL time per create, split by what the stacks hold
# (identity, SQLite commit, the rest of the store, HTTP, ...).
# Then: a create_port check as Neutron composes it (action + binding:host_id + fixed_ips with its keys), timed in
# provnet's compiled engine here and in oslo.policy inside Keystone's virtualenv (where oslo.policy is installed).
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_ports import Store, _ms, free_port  # noqa: E402

from provnet.identity.keystone_admin import KeystoneAdmin  # noqa: E402
from provnet.identity.neutron_policy import DEFAULT_RULES, match_rule  # noqa: E402
from provnet.identity.policy import Policy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROVNET = Path(sys.executable).parent / "provnet"
KEYSTONE_VENV = Path(os.environ.get("PROVNET_KEYSTONE_VENV", "/opt/provnet-keystone"))
PROFILE_RATE = 250  # py-spy samples per second


def call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                timeout=60) as r:
        return json.load(r)


def start_api(tmp: str, name: str, db_url: str, conf_lines: list[str]) -> tuple[subprocess.Popen, str, object]:
    conf = Path(tmp) / f"{name}.conf"
    conf.write_text("\n".join(conf_lines) + "\n")
    port = free_port()
    log = open(Path(tmp) / f"{name}.log", "w+")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([str(PROVNET), "--config-file", str(conf), "--state-path", tmp, "--db", db_url, "api",
                             "--bind-port", str(port)], stdout=subprocess.DEVNULL, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return proc, url, log
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"provnet api ({name}) did not start: {log.read()[-2000:]}") from None
            time.sleep(0.1)


def wrk(url: str, network_id: str, token: str | None, seconds: int, concurrency: int, tmp: str) -> tuple[float, str]:
    script = Path(tmp) / "post_port.lua"
    script.write_text('wrk.method = "POST"\n'
                      f'wrk.body = \'{{"port": {{"network_id": "{network_id}"}}}}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      + (f'wrk.headers["X-Auth-Token"] = "{token}"\n' if token else ""))
    ran = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"{url}/v2.0/ports"], capture_output=True, text=True)
    out = ran.stdout
    found = [re.search(pattern, out, re.M) for pattern in
             (r"Requests/sec:\s+([\d.]+)", r"^\s+50%\s+(\S+)\s*$", r"^\s+99%\s+(\S+)\s*$")]  # "1.29s "
    if ran.returncode != 0 or not all(found):  # e.g. no request answered within the slice: say what wrk said
        raise RuntimeError(f"wrk against {url} (exit {ran.returncode}) gave no figures:\n{out}{ran.stderr}")
    rate, p50, p99 = float(found[0].group(1)), _ms(found[1].group(1)), _ms(found[2].group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  failures {bad.group(1) if bad else 0}"


# What a sampled stack is spent in, first match from the leaf up decides (inclusive of what it calls).
PROFILE_GROUPS = (
    ("identity (token, policy, attribute views)", ("provnet/api/auth.py", "provnet/api/authz.py", "provnet/identity/")),
    ("SQLite commit", ("do_commit",)),
    ("change feed", ("provnet/registry/feed", "wait_changes")),
    ("store (registry, SQLAlchemy)", ("provnet/registry/", "sqlalchemy/")),
    ("HTTP (aiohttp, JSON)", ("aiohttp/", "json/", "provnet/api/wire.py")),
)


def profile_groups(raw: Path) -> tuple[int, dict[str, int]]:
    """py-spy's raw output (`frame;frame;... count`, root first) -> total samples and samples per group."""
    total, groups = 0, dict.fromkeys([name for name, _ in PROFILE_GROUPS] + ["other"], 0)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        frames = stack.split(";")
        for frame in reversed(frames):  # the leaf's nearest owner: a commit inside the store counts as commit
            name = next((n for n, marks in PROFILE_GROUPS if any(m in frame for m in marks)), None)
            if name is not None:
                break
        groups[name or "other"] += int(count)
    return total, groups


class Api:
    """One `provnet api` with its store, its network and the token its requests carry."""

    def __init__(self, kind: str, mode: str, tmp: str, keystone: dict) -> None:
        self.mode = mode
        self.store = Store(kind, tmp)
        lines = ["[DEFAULT]", f"auth_strategy = {mode}"]
        if mode == "keystone":
            lines += ["[keystone_authtoken]", f"auth_url = {keystone['url']}", "username = provnet",
                      f"password = {keystone['service_password']}", "project_name = service"]
        self.proc, self.url, self.log = start_api(tmp, f"{mode}-{kind}", self.store.url, lines)
        self.token = keystone["member_token"] if mode == "keystone" else None
        net = call(f"{self.url}/v2.0/networks", "POST", {"network": {"name": "bench"}}, self.token)["network"]
        call(f"{self.url}/v2.0/subnets", "POST", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                             "cidr": "10.64.0.0/12"}}, self.token)
        self.network_id = net["id"]
        self.requests = 0.0
        self.seconds = 0.0

    def slice(self, seconds: int, concurrency: int, tmp: str) -> str:
        rate, detail = wrk(self.url, self.network_id, self.token, seconds, concurrency, tmp)
        self.requests += rate * seconds
        self.seconds += seconds
        return f"{rate:8.0f} creates/s  {detail}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()
        self.store.drop()


def start_keystone(tmp: str) -> dict:
    directory = Path(tmp) / "keystone"
    port = free_port()
    ran = subprocess.run(["bash", str(ROOT / "scripts/keystone.sh"), "start", str(directory), str(port)],
                         capture_output=True, text=True)
    if ran.returncode != 0:
        raise SystemExit(f"scripts/keystone.sh start failed (exit {ran.returncode}):\n{ran.stderr[-3000:]}")
    url = f"http://127.0.0.1:{port}/v3"
    admin = KeystoneAdmin(url, (directory / "admin-password").read_text().strip())
    admin.ensure_user("provnet", "bench-service-pw", "service", ("service",))
    admin.ensure_user("bench-member", "bench-member-pw", "bench", ("member",))
    return {"dir": directory, "url": url, "service_password": "bench-service-pw",
            "member_token": admin.token("bench-member", "bench-member-pw", "bench")}


OSLO_SNIPPET = r"""
import json, sys, timeit
from oslo_config import cfg
from oslo_policy import _checks, policy
rules, names, target, creds, number = json.load(sys.stdin)
conf = cfg.ConfigOpts()
conf([], project="bench")
enforcer = policy.Enforcer(conf, use_conf=False)
enforcer.set_rules(policy.Rules.from_dict(rules, default_rule="default"), use_conf=False)
check = _checks.RuleCheck("rule", names[0])
for name in names[1:]:
    check = _checks.AndCheck([check, _checks.RuleCheck("rule", name)])
assert enforcer.enforce(check, target, creds)
print(min(timeit.repeat(lambda: enforcer.enforce(check, target, creds), number=number, repeat=5)) / number)
"""


def policy_costs(number: int) -> str:
    """One create_port check (4 rules, as Neutron composes them) in provnet's engine and in oslo.policy."""
    body = {"network_id": "n1", "binding:host_id": "compute1",
            "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.5"}]}
    rule = match_rule("create_port", "port", body)
    target = {**body, "project_id": "p1", "network:project_id": "p1"}
    creds = {"roles": ["service"], "project_id": "p1", "tenant_id": "p1", "user_id": "u"}
    engine = Policy(DEFAULT_RULES)
    ours_creds = {**creds, "roles": frozenset(creds["roles"])}
    assert all(engine.check(n, target, ours_creds) for n in rule.rules)
    ours = min(timeit.repeat(lambda: all(engine.check(n, target, ours_creds) for n in rule.rules), number=number,
                             repeat=5)) / number
    line = f"policy   provnet's engine {ours * 1e6:6.1f} us per check ({len(rule.rules)} rules: {rule.text})"
    python = KEYSTONE_VENV / "bin" / "python"
    if not python.exists():
        return line + "\npolicy   oslo.policy: not measured (no Keystone virtualenv: bash scripts/keystone.sh install)"
    proc = subprocess.run([str(python), "-c", OSLO_SNIPPET], input=json.dumps(
        [DEFAULT_RULES, list(rule.rules), target, creds, number]), capture_output=True, text=True)
    if proc.returncode != 0:
        return line + f"\npolicy   oslo.policy failed: {proc.stderr.strip().splitlines()[-1]}"
    oslo = float(proc.stdout.strip())
    imported = subprocess.run([str(python), "-X", "importtime", "-c", "import oslo_policy.policy"],
                              capture_output=True, text=True).stderr.strip().splitlines()[-1]
    import_ms = int(imported.split("|")[1]) / 1000
    return (line + f"\npolicy   oslo.policy      {oslo * 1e6:6.1f} us per check (the same rules and tree), "
                   f"import {import_ms:.0f} ms; ratio {oslo / ours:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description="Port creates/s through the API: Keystone auth against noauth.")
    parser.add_argument("--slice", type=int, default=2, help="seconds of one wrk slice (default 2)")
    parser.add_argument("--rounds", type=int, default=10, help="noauth/keystone slice pairs (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite", help="store (default sqlite)")
    parser.add_argument("--checks", type=int, default=20000, help="policy checks timed per repeat")
    parser.add_argument("--profile", action="store_true", help="sample both APIs with py-spy during the slices")
    args = parser.parse_args()
    print(f"# benchmarks/api_keystone.py on {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pnbench") as tmp:
        keystone = start_keystone(tmp)
        apis: dict[str, Api] = {}
        spies: dict[str, subprocess.Popen] = {}
        try:
            apis = {mode: Api(args.db, mode, tmp, keystone) for mode in ("noauth", "keystone")}
            spy = [str(Path(sys.executable).parent / "py-spy"), "record", "-r", str(PROFILE_RATE), "-f", "raw",
                   "--gil", "--nonblocking"]
            spies = {mode: subprocess.Popen([*spy, "-p", str(api.proc.pid), "-o", f"{tmp}/{mode}.spy"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for mode, api in apis.items()} if args.profile else {}
            for round_ in range(1, args.rounds + 1):
                order = ("noauth", "keystone") if round_ % 2 else ("keystone", "noauth")
                for mode in order:
                    line = apis[mode].slice(args.slice, args.concurrency, tmp)
                    print(f"round {round_:2d} {args.db:<10} {mode:<8} {line}", flush=True)
            rates = {mode: api.requests / api.seconds for mode, api in apis.items()}
            print(f"{args.db}: noauth {rates['noauth']:.0f} creates/s, keystone {rates['keystone']:.0f} creates/s "
                  f"over {args.rounds} x {args.slice} s each: keystone/noauth {rates['keystone'] / rates['noauth']:.1%}"
                  " (target >= 90 %)", flush=True)
            for mode, spy in spies.items():
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
                total, groups = profile_groups(Path(f"{tmp}/{mode}.spy"))
                per = 1000.0 / PROFILE_RATE / apis[mode].requests  # ms per create, per sample
                print(f"profile  {mode:<8} {total * per:.3f} ms holding the GIL per create: " + ", ".join(
                    f"{name} {count * per:.3f}" for name, count in groups.items()), flush=True)
        finally:
            for spy in spies.values():
                if spy.poll() is None:
                    spy.kill()
            for api in apis.values():
                api.close()
            subprocess.run(["bash", str(ROOT / "scripts/keystone.sh"), "stop", str(keystone["dir"])], check=False)
        print(policy_costs(args.checks), flush=True)


if __name__ == "__main__":
    main()
