# IMDSv2 on the whole path in network namespaces (VM -> iptables REDIRECT -> the real `provnet metadata-proxy`
# -> agent -> API): cloud-init's own EC2 datasource (Debian's, /usr/bin/python3) fetching a token before it crawls,
# `required` against curl, cloud-init's OpenStack reader with `optional`, and relays inside a VM: a NAT'ed
# container (the token's answer leaves with IP TTL = the hop limit) and nginx as an open reverse proxy.
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import need, need_root, need_tool, unique
from metadata_chain import Chain, build_seed, build_topology, ns_python, sh, wait_port

from provnet.registry import open_registry

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    need_root()
    need_tool("ip", "iptables", "curl", "nginx")
    need(os.path.exists("/usr/bin/python3") and shutil.which("cloud-init") is not None,
         "needs Debian's cloud-init package (/usr/bin/python3 -c 'import cloudinit')")
    tmp = tmp_path_factory.mktemp("imdsv2-netns")
    registry = open_registry(f"sqlite:///{tmp}/provnet.sqlite")
    seed = build_seed(registry)
    registry.update_instance(seed.instances["vm1"], {"metadata": {"vm": "vm1", "provnet:http_tokens": "required"}})
    chain = Chain(registry, tmp)
    chain.settle()
    topo = None
    state = tempfile.mkdtemp(prefix="pn-")
    extra_ns: list[str] = []
    try:
        macs = {vm: registry.get_port(port).mac_address for vm, port in seed.ports.items()}
        topo = build_topology({"vm1": "172.16.1.103", "vm2": "172.16.1.104"}, macs=macs)
        topo.start_proxy(chain.socket_path, seed.router_id, state, str(tmp / "proxy.log"))
        wait_port(topo.router_ns, "127.0.0.1", 9697)
        yield {"registry": registry, "seed": seed, "chain": chain, "topo": topo, "tmp": tmp, "extra_ns": extra_ns}
    finally:
        if topo is not None:
            topo.teardown()
        for ns in extra_ns:
            sh("ip", "netns", "delete", ns, check=False)
        chain.close()
        registry.close()
        shutil.rmtree(state, ignore_errors=True)


def curl(world, vm_or_ns: str, *args: str, timeout: int = 20) -> subprocess.CompletedProcess:
    ns = world["topo"].vm_ns.get(vm_or_ns, vm_or_ns)
    return subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", *args], capture_output=True,
                          text=True, timeout=timeout)


EC2_DATASOURCE = r'''
import json, tempfile
from cloudinit import distros, helpers, url_helper
from cloudinit.sources import DataSourceEc2
seen = []
real = url_helper.readurl
def recording(url, *a, **kw):
    headers = kw.get("headers") or {}
    if callable(kw.get("headers_cb")):
        headers = {**headers, **(kw["headers_cb"](url) or {})}
    method = kw.get("request_method") or "GET"
    try:
        resp = real(url, *a, **kw)
        code = resp.code
        return resp
    except url_helper.UrlError as e:
        code = e.code
        raise
    finally:
        seen.append([method, url, "X-aws-ec2-metadata-token" in headers, code])
url_helper.readurl = recording
DataSourceEc2.uhelp.readurl = recording
tmp = tempfile.mkdtemp()
paths = helpers.Paths({"run_dir": tmp, "cloud_dir": tmp})
distro = distros.fetch("debian")("debian", {}, paths)
cfg = {"datasource": {"Ec2": {"metadata_urls": ["http://169.254.169.254"], "max_wait": 30, "timeout": 5}}}
ds = DataSourceEc2.DataSourceEc2(cfg, distro, paths)
ds._cloud_name = "aws"  # what DMI says on EC2 (a UUID starting with ec2): the datasource speaks IMDSv2 then
ds.perform_dhcp_setup = False
ok = ds._get_data()
ud = ds.userdata_raw
print(json.dumps({"ok": ok, "instance-id": (ds.metadata or {}).get("instance-id"),
                  "local-ipv4": (ds.metadata or {}).get("local-ipv4"),
                  "ud": ud.decode() if isinstance(ud, bytes) else ud, "seen": seen}))
'''


def test_cloud_init_ec2_datasource_crawls_with_a_token_when_required(world):
    topo = world["topo"]
    plain = curl(world, "vm1", "-o", "/dev/null", "-w", "%{http_code}", "http://169.254.169.254/latest/meta-data/")
    assert plain.stdout == "401"  # required: no token, no data
    proc = ns_python(topo, "vm1", EC2_DATASOURCE, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ok"] is True and got["instance-id"].startswith("i-") and got["local-ipv4"] == "172.16.1.103"
    assert got["ud"].startswith("#cloud-config") and got["ud"].endswith("# vm1\n")
    methods = [(m, url.split("169.254.169.254")[1]) for m, url, _, _ in got["seen"]]
    assert methods[0] == ("PUT", "/latest/api/token")  # the token first
    assert sum(1 for m, _ in methods if m == "PUT") == 1  # one PUT per boot
    gets = [(url, with_token, code) for m, url, with_token, code in got["seen"] if m == "GET"]
    assert gets and all(with_token for _, with_token, _ in gets)  # every GET carried it
    assert not [g for g in gets if g[2] == 401]
    assert any("/meta-data/instance-id" in url and code == 200 for url, _, code in gets)
    # the same crawl against vm2 (optional) works without anything special, and curl without a token too
    assert curl(world, "vm2", "http://169.254.169.254/latest/meta-data/local-ipv4").stdout == "172.16.1.104"



READ_V2 = r'''
import json
from cloudinit.sources.helpers import openstack
reader = openstack.MetadataReader("http://169.254.169.254", timeout=5, retries=0)
r = reader.read_v2()
print(json.dumps({"uuid": r["metadata"]["uuid"], "ec2": r["ec2-metadata"].get("instance-id")}))
'''


def test_cloud_init_openstack_reader_with_optional(world):
    proc = ns_python(world["topo"], "vm2", READ_V2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["uuid"] == world["seed"].instances["vm2"] and got["ec2"].startswith("i-")


def _container_behind(world, vm: str, address: str) -> str:
    """A namespace NAT'ed behind `vm` (a container with its own network): its traffic leaves as the VM's."""
    topo = world["topo"]
    ns = unique("pnk")
    world["extra_ns"].append(ns)
    outer, inner = unique("pnh"), unique("pnc")
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", outer, "netns", topo.vm_ns[vm], "type", "veth", "peer", "name", inner, "netns", ns)
    vm_ip = ["ip", "-n", topo.vm_ns[vm]]
    sh(*vm_ip, "addr", "add", f"{address}.1/24", "dev", outer)
    sh(*vm_ip, "link", "set", outer, "up")
    sh("ip", "netns", "exec", topo.vm_ns[vm], "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "netns", "exec", topo.vm_ns[vm], "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", f"{address}.0/24",
       "-o", "eth0", "-j", "MASQUERADE")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "addr", "add", f"{address}.2/24", "dev", inner)
    sh("ip", "-n", ns, "link", "set", inner, "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", f"{address}.1")
    return ns


def test_a_container_behind_nat_in_the_vm_gets_no_token(world):
    registry, seed, chain = world["registry"], world["seed"], world["chain"]
    ctr = _container_behind(world, "vm2", "10.77.0")
    put = ["-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token"]
    assert curl(world, "vm2", *put).stdout  # the VM itself gets one
    reached = curl(world, ctr, "-o", "/dev/null", "-w", "%{http_code}", "http://169.254.169.254/latest/meta-data/")
    assert reached.stdout == "200"  # the container reaches the service (as the VM: optional allows a plain GET)
    blocked = curl(world, ctr, *put)
    assert blocked.returncode != 0 and blocked.stdout == ""  # the answer left with TTL 1 and died in the VM
    # hop limit 2 (the instance says so): the same PUT from the container now gets a token
    registry.update_instance(seed.instances["vm2"], {"metadata": {"vm": "vm2",
                                                                   "provnet:http_put_response_hop_limit": "2"}})
    chain.settle()
    assert curl(world, ctr, *put).stdout.startswith("1.")


NGINX = """
daemon off; pid {dir}/nginx.pid; error_log {dir}/error.log; worker_processes 1;
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir};
  uwsgi_temp_path {dir}; scgi_temp_path {dir};
  server {{ listen 172.16.1.103:8080; location / {{ proxy_pass http://169.254.169.254;
           proxy_set_header X-Forwarded-For $remote_addr; }} }}
  server {{ listen 172.16.1.103:8081; location / {{ proxy_pass http://169.254.169.254;
           proxy_set_header X-Forwarded-For ""; }} }}
}}
"""


def test_an_open_reverse_proxy_in_one_vm_relays_for_another(world):
    topo, seed = world["topo"], world["seed"]
    run_dir = tempfile.mkdtemp(prefix="pnnginx-")
    conf = os.path.join(run_dir, "nginx.conf")
    with open(conf, "w") as fh:
        fh.write(NGINX.format(dir=run_dir))
    proc = subprocess.Popen(["ip", "netns", "exec", topo.vm_ns["vm1"], "nginx", "-c", conf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(topo.vm_ns["vm2"], "172.16.1.103", 8080)
        wait_port(topo.vm_ns["vm2"], "172.16.1.103", 8081)
        put = ["-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60"]
        # with X-Forwarded-For (the relay says it is one): no token at all
        relayed = curl(world, "vm2", "-w", "\n%{http_code}", *put, "http://172.16.1.103:8080/latest/api/token")
        assert relayed.stdout.endswith("\n400"), relayed.stdout
        # without: the relay is indistinguishable from vm1 itself, so what it gets is vm1's (never vm2's)
        token = curl(world, "vm2", *put, "http://172.16.1.103:8081/latest/api/token").stdout
        assert token.startswith("1.")
        mine = curl(world, "vm2", "-H", f"X-aws-ec2-metadata-token: {token}",
                    "http://172.16.1.103:8081/openstack/latest/meta_data.json").stdout
        assert json.loads(mine)["uuid"] == seed.instances["vm1"]
        # vm1's token relayed back to vm2 and used directly from vm2: refused, no data of vm1
        stolen = curl(world, "vm2", "-w", "\n%{http_code}", "-H", f"X-aws-ec2-metadata-token: {token}",
                      "http://169.254.169.254/openstack/latest/meta_data.json").stdout
        assert stolen.endswith("\n401") and seed.instances["vm1"] not in stolen
        # vm1 requires tokens: a GET relayed without one gets nothing
        plain = curl(world, "vm2", "-w", "\n%{http_code}", "http://172.16.1.103:8080/latest/meta-data/").stdout
        assert plain.endswith("\n401")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(run_dir, ignore_errors=True)

