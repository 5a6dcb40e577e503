# The Neutron v2.0 subset over real HTTP on a real SqlRegistry (SQLite and PostgreSQL): shapes, filters, statuses.
from __future__ import annotations

import pytest
from api_server import SEED_NET, SEED_SUBNET, Client, running_api


@pytest.fixture
def api(db_url: str):
    with running_api(db_url) as (client, _registry):
        yield client


def test_version_document_self_link_follows_the_host_header(api: Client) -> None:
    body = api.ok("GET", "/")
    assert body["versions"][0]["links"][0]["href"] == f"{api.url}/v2.0/"
    status, body = api.get("/", headers={"Host": "neutron.example:9696"})
    assert body["versions"][0]["links"][0]["href"] == "http://neutron.example:9696/v2.0/"
    resources = api.ok("GET", "/v2.0/")["resources"]
    assert {r["collection"] for r in resources} == {"networks", "subnets", "ports", "routers", "agents"}
    status, body = api.get("/v2.0")
    assert status == 404 and "NeutronError" in body


def test_extensions(api: Client) -> None:
    aliases = {e["alias"] for e in api.ok("GET", "/v2.0/extensions")["extensions"]}
    assert {"external-net", "provider", "binding", "port-security", "router", "agent"} <= aliases
    assert api.ok("GET", "/v2.0/extensions/external-net")["extension"]["alias"] == "external-net"
    for alias in ("tag-ports-during-bulk-creation", "nope"):
        status, body = api.get(f"/v2.0/extensions/{alias}")
        assert status == 404
        assert body["NeutronError"] == {"type": "ExtensionNotFound", "detail": "",
                                        "message": f"Extension with alias {alias} does not exist."}


def test_seed_network_and_subnet_as_the_old_neutron_cli_sends_them(api: Client) -> None:
    # `net-create -- --router:external=True ...` sends the boolean as the string "True"
    net = api.ok("POST", "/v2.0/networks", {"network": {**SEED_NET, "router:external": "True"}}, 201)["network"]
    assert net["router:external"] is True
    assert (net["provider:network_type"], net["provider:physical_network"], net["mtu"]) == ("flat", "physnet1", 1500)
    assert net["status"] == "ACTIVE" and net["tenant_id"] == net["project_id"] == "fake_project_id"
    # the old CLI's name lookup
    assert api.ok("GET", "/v2.0/networks?name=phy_net&fields=id") == {"networks": [{"id": net["id"]}]}
    subnet = api.ok("POST", "/v2.0/subnets", {"subnet": {**SEED_SUBNET, "network_id": net["id"]}}, 201)["subnet"]
    assert subnet["cidr"] == "172.16.1.0/24"
    assert subnet["gateway_ip"] == "172.16.1.2"
    assert subnet["allocation_pools"] == [{"start": "172.16.1.102", "end": "172.16.1.126"}]
    assert subnet["enable_dhcp"] is False and subnet["name"] == "phy_subnet_without_dhcp"
    assert api.ok("GET", f"/v2.0/networks/{net['id']}")["network"]["subnets"] == [subnet["id"]]


def test_json_suffix_is_tolerated(api: Client) -> None:
    net, _ = api.seed()
    assert api.ok("GET", "/v2.0/networks.json")["networks"][0]["id"] == net["id"]
    assert api.ok("GET", f"/v2.0/networks/{net['id']}.json")["network"]["name"] == "phy_net"
    assert api.ok("GET", "/v2.0/extensions.json")["extensions"]


def test_ports_filters_and_fields(api: Client) -> None:
    net, subnet = api.seed()
    made = [api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"], "name": f"p{i}",
                                                    "device_id": "vm-a" if i < 2 else "vm-b"}}, 201)["port"]
            for i in range(3)]
    for port in made:
        assert port["status"] == "DOWN" and port["binding:vif_type"] == "unbound"
        assert port["mac_address"].startswith("fa:16:3e:")
        (ip,) = port["fixed_ips"]
        assert ip["subnet_id"] == subnet["id"]
        assert 102 <= int(ip["ip_address"].rsplit(".", 1)[1]) <= 126
    ip = made[1]["fixed_ips"][0]["ip_address"]
    found = api.ok("GET", f"/v2.0/ports?fixed_ips=ip_address%3D{ip}&network_id={net['id']}")["ports"]
    assert [p["id"] for p in found] == [made[1]["id"]]
    # a key repeated is OR
    both = api.ok("GET", "/v2.0/ports?name=p0&name=p2")["ports"]
    assert {p["name"] for p in both} == {"p0", "p2"}
    # different keys are AND
    assert [p["name"] for p in api.ok("GET", "/v2.0/ports?device_id=vm-a&name=p2")["ports"]] == []
    assert {p["name"] for p in api.ok("GET", "/v2.0/ports?device_id=vm-a")["ports"]} == {"p0", "p1"}
    # fields
    rows = api.ok("GET", "/v2.0/ports?device_id=vm-b&fields=id&fields=mac_address")["ports"]
    assert rows == [{"id": made[2]["id"], "mac_address": made[2]["mac_address"]}]
    shown = api.ok("GET", f"/v2.0/ports/{made[0]['id']}?fields=name")
    assert shown == {"port": {"name": "p0"}}
    # an unknown filter is a 400, as with Neutron's filter validation
    status, body = api.get("/v2.0/ports?colour=red")
    assert status == 400 and "colour" in body["NeutronError"]["message"]
    # paging
    page = api.ok("GET", "/v2.0/ports?sort_key=name&sort_dir=asc&limit=2")
    assert [p["name"] for p in page["ports"]] == ["p0", "p1"]
    assert page["ports_links"][0]["rel"] == "next"


def test_update_and_delete(api: Client) -> None:
    net, _ = api.seed()
    port = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, 201)["port"]
    updated = api.ok("PUT", f"/v2.0/ports/{port['id']}", {"port": {"name": "web", "device_id": "vm1"}})["port"]
    assert (updated["name"], updated["device_id"]) == ("web", "vm1")
    assert updated["fixed_ips"] == port["fixed_ips"]
    status, body = api.delete(f"/v2.0/ports/{port['id']}")
    assert (status, body) == (204, None)
    status, body = api.get(f"/v2.0/ports/{port['id']}")
    assert status == 404
    assert body["NeutronError"]["type"] == "PortNotFound"
    assert body["NeutronError"]["message"] == f"Port {port['id']} could not be found."
    net2 = api.ok("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "renamed"}})["network"]
    assert net2["name"] == "renamed"


def test_project_comes_from_the_header(api: Client) -> None:
    status, body = api.post("/v2.0/networks", {"network": {"name": "p"}}, headers={"X-Project-Id": "proj-1"})
    assert status == 201
    assert body["network"]["project_id"] == body["network"]["tenant_id"] == "proj-1"
    status, body = api.post("/v2.0/routers", {"router": {"name": "r"}}, headers={"X-Tenant-Id": "proj-2"})
    assert body["router"]["project_id"] == "proj-2"


def test_bulk_create_is_one_answer_and_all_or_nothing(api: Client) -> None:
    net, subnet = api.seed()
    body = api.ok("POST", "/v2.0/ports", {"ports": [{"network_id": net["id"], "name": "a"},
                                                     {"network_id": net["id"], "name": "b"}]}, 201)
    assert [p["name"] for p in body["ports"]] == ["a", "b"]
    before = api.snapshot()
    taken = body["ports"][0]["fixed_ips"][0]["ip_address"]
    status, err = api.post("/v2.0/ports", {"ports": [
        {"network_id": net["id"], "name": "c"},
        {"network_id": net["id"], "name": "d", "fixed_ips": [{"ip_address": taken}]}]})
    assert status == 409 and err["NeutronError"]["type"] == "IpAddressAlreadyAllocated"
    assert api.snapshot() == before


# Each rule's status and message through HTTP; each failed request leaves the store as it was.
def _net(api: Client, **attrs) -> dict:
    return api.ok("POST", "/v2.0/networks", {"network": attrs}, 201)["network"]


BAD_NETWORKS = [
    ({"name": "x", "foo": 1}, 400, "HTTPBadRequest", "Unrecognized attribute(s) 'foo'"),
    ({"admin_state_up": "maybe"}, 400, "HTTPBadRequest", "Invalid input for admin_state_up. Reason:"),
    ({"provider:network_type": "flat"}, 400, "InvalidInput", "physical_network required for flat provider network"),
    ({"provider:network_type": "flat", "provider:physical_network": "physnet9", "provider:segmentation_id": 5},
     400, "InvalidInput", "segmentation_id prohibited for flat provider network"),
    ({"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 4095},
     400, "InvalidInput", "segmentation_id out of range (1 through 4094)"),
    ({"provider:network_type": "vxlan", "provider:physical_network": "physnet1"}, 400, "InvalidInput",
     "provider:physical_network specified for vxlan network"),
    ({"provider:network_type": "token-ring"}, 400, "InvalidInput", "network_type value 'token-ring' not supported"),
    ({"mtu": 9000}, 400, "HTTPBadRequest", "mtu"),
]


@pytest.mark.parametrize(("attrs", "status", "type_", "message"), BAD_NETWORKS)
def test_bad_networks(api: Client, attrs: dict, status: int, type_: str, message: str) -> None:
    before = api.snapshot()
    got, body = api.post("/v2.0/networks", {"network": attrs})
    assert got == status, body
    assert body["NeutronError"]["type"] == type_
    assert message in body["NeutronError"]["message"]
    assert api.snapshot() == before


def test_network_conflicts(api: Client) -> None:
    api.seed()
    before = api.snapshot()
    status, body = api.post("/v2.0/networks", {"network": {**SEED_NET, "name": "again"}})
    assert status == 409
    assert body["NeutronError"] == {
        "type": "FlatNetworkInUse", "detail": "",
        "message": "Unable to create the flat network. Physical network physnet1 is in use."}
    _net(api, **{"provider:network_type": "vlan", "provider:physical_network": "physnet2",
                 "provider:segmentation_id": 100})
    before = api.snapshot()
    status, body = api.post("/v2.0/networks", {"network": {
        "provider:network_type": "vlan", "provider:physical_network": "physnet2", "provider:segmentation_id": 100}})
    assert status == 409 and body["NeutronError"]["type"] == "VlanIdInUse"
    assert api.snapshot() == before


@pytest.mark.parametrize(("attrs", "status", "type_", "message"), [
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.0"}, 400, None, "Gateway is not valid on subnet"),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.1.5"}]}, 400,
     "OutOfBoundsAllocationPool", "spans beyond the subnet cidr 10.0.0.0/24"),
    ({"cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"},
                                                  {"start": "10.0.0.15", "end": "10.0.0.30"}]}, 409,
     "OverlappingAllocationPools", "overlapping allocation pools"),
    ({"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.12",
      "allocation_pools": [{"start": "10.0.0.10", "end": "10.0.0.20"}]}, 409,
     "GatewayConflictWithAllocationPools", "Gateway ip 10.0.0.12 conflicts with allocation pool"),
    ({"cidr": "10.0.0.0/24", "dns_nameservers": [f"10.0.0.{i}" for i in range(1, 7)]}, 400, None, "DNS"),
    ({"cidr": "not-a-cidr"}, 400, "HTTPBadRequest", "Invalid input for cidr"),
    ({"cidr": "10.0.0.0/24", "ip_version": 7}, 400, "HTTPBadRequest", "Invalid input for ip_version"),
    ({"cidr": "10.0.0.0/24", "enable_dhcp": "sometimes"}, 400, "HTTPBadRequest", "Invalid input for enable_dhcp"),
    ({"ip_version": 4}, 400, "HTTPBadRequest", "Failed to parse request. Required attribute 'cidr' not specified"),
])
def test_bad_subnets(api: Client, attrs: dict, status: int, type_: str | None, message: str) -> None:
    net = _net(api, name="n")
    before = api.snapshot()
    got, body = api.post("/v2.0/subnets", {"subnet": {"ip_version": 4, "network_id": net["id"], **attrs}})
    assert got == status, body
    if type_:
        assert body["NeutronError"]["type"] == type_
    assert message.lower() in body["NeutronError"]["message"].lower()
    assert api.snapshot() == before


def test_subnet_overlap_and_read_only_update(api: Client) -> None:
    net, subnet = api.seed()
    before = api.snapshot()
    status, body = api.post("/v2.0/subnets", {"subnet": {"ip_version": 4, "network_id": net["id"],
                                                         "cidr": "172.16.1.128/25"}})
    assert status == 400 and "overlaps with another subnet" in body["NeutronError"]["message"]
    status, body = api.put(f"/v2.0/subnets/{subnet['id']}", {"subnet": {"cidr": "10.0.0.0/24"}})
    assert status == 400
    assert body["NeutronError"]["message"] == "Cannot update read-only attribute cidr"
    status, body = api.post("/v2.0/subnets", {"subnet": {"ip_version": 4, "network_id": "nope", "cidr": "1.0.0.0/24"}})
    assert status in (400, 404)
    assert api.snapshot() == before


def test_port_address_rules(api: Client) -> None:
    net, subnet = api.seed()
    port = api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"],
                                                   "fixed_ips": [{"ip_address": "172.16.1.103"}]}}, 201)["port"]
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "172.16.1.103"}]
    before = api.snapshot()
    status, body = api.post("/v2.0/ports", {"port": {"network_id": net["id"],
                                                     "fixed_ips": [{"ip_address": "172.16.1.103"}]}})
    assert status == 409
    assert body["NeutronError"]["message"] == f"IP address 172.16.1.103 already allocated in subnet {subnet['id']}"
    status, body = api.post("/v2.0/ports", {"port": {"network_id": net["id"],
                                                     "fixed_ips": [{"ip_address": "10.9.9.9"}]}})
    assert status == 400
    status, body = api.post("/v2.0/ports", {"port": {"network_id": net["id"], "mac_address": port["mac_address"]}})
    assert status == 409 and body["NeutronError"]["type"] == "MacAddressInUse"
    status, body = api.post("/v2.0/ports", {"port": {"network_id": net["id"], "mac_address": "zz:zz"}})
    assert status == 400 and "mac_address" in body["NeutronError"]["message"]
    status, body = api.post("/v2.0/ports", {"port": {"name": "no-net"}})
    assert status == 400 and "network_id" in body["NeutronError"]["message"]
    assert api.snapshot() == before


def test_exhaustion_is_a_409_that_names_the_network(api: Client) -> None:
    net = _net(api, name="tiny")
    api.ok("POST", "/v2.0/subnets", {"subnet": {"ip_version": 4, "network_id": net["id"], "cidr": "10.1.0.0/24",
                                                "allocation_pools": [{"start": "10.1.0.10", "end": "10.1.0.11"}]}},
           201)
    for _ in range(2):
        api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, 201)
    before = api.snapshot()
    status, body = api.post("/v2.0/ports", {"port": {"network_id": net["id"]}})
    assert status == 409
    assert body["NeutronError"] == {"type": "IpAddressGenerationFailure", "detail": "",
                                    "message": f"No more IP addresses available on network {net['id']}."}
    assert api.snapshot() == before


def test_in_use_deletes_are_409(api: Client) -> None:
    net, subnet = api.seed()
    api.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, 201)
    status, body = api.delete(f"/v2.0/networks/{net['id']}")
    assert status == 409 and body["NeutronError"]["type"] == "NetworkInUse"
    status, body = api.delete(f"/v2.0/subnets/{subnet['id']}")
    assert status == 409


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"network": {"name": ', "Malformed request body"),
    (b"", "Resource body required"),
    (b'["network"]', "Unable to find 'network' in request body"),
    (b'{"network": []}', "must be a JSON object"),
    (b'{"network": {"name": 5}}', "Invalid input for name"),
])
def test_malformed_bodies_are_readable_400s(api: Client, raw: bytes, message: str) -> None:
    before = api.snapshot()
    status, body = api.post("/v2.0/networks", raw=raw, body=None)
    assert status == 400
    assert message in body["NeutronError"]["message"]
    assert "Traceback" not in api.last.text
    assert api.snapshot() == before


def test_routers_and_interfaces(api: Client) -> None:
    net, subnet = api.seed()
    router = api.ok("POST", "/v2.0/routers", {"router": {"name": "r1"}}, 201)["router"]
    info = api.ok("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": subnet["id"]})
    assert info["subnet_id"] == subnet["id"] and info["network_id"] == net["id"]
    port = api.ok("GET", f"/v2.0/ports/{info['port_id']}")["port"]
    assert port["device_owner"] == "network:router_interface" and port["device_id"] == router["id"]
    assert port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "172.16.1.2"}]
    status, body = api.delete(f"/v2.0/routers/{router['id']}")
    assert status == 409
    for bad in ({}, {"subnet_id": subnet["id"], "port_id": port["id"]}, {"network_id": "x"}, {"subnet_id": 5}):
        status, body = api.put(f"/v2.0/routers/{router['id']}/add_router_interface", bad)
        assert status == 400, bad
    status, _ = api.put("/v2.0/routers/nope/add_router_interface", {"subnet_id": subnet["id"]})
    assert status == 404
    api.ok("PUT", f"/v2.0/routers/{router['id']}/remove_router_interface", {"subnet_id": subnet["id"]})
    assert api.get(f"/v2.0/ports/{info['port_id']}")[0] == 404
    assert api.delete(f"/v2.0/routers/{router['id']}")[0] == 204


def test_agents(api: Client) -> None:
    status, body = api.post("/v2.0/agents", {"agent": {"host": "h"}})
    assert status == 405 and body["NeutronError"]["type"] == "HTTPMethodNotAllowed"
    agent = api.ok("POST", "/provnet/v1/agents/report", {"agent": {
        "host": "compute1", "agent_type": "Open vSwitch agent", "binary": "provnet-agent",
        "configurations": {"bridge_mappings": {"physnet1": "br-phy"}}}})["agent"]
    assert agent["alive"] is True and agent["configurations"]["bridge_mappings"] == {"physnet1": "br-phy"}
    listed = api.ok("GET", "/v2.0/agents?agent_type=Open+vSwitch+agent&host=compute1")["agents"]
    assert [a["id"] for a in listed] == [agent["id"]]
    assert api.ok("GET", "/v2.0/agents?host=other")["agents"] == []
    updated = api.ok("PUT", f"/v2.0/agents/{agent['id']}", {"agent": {"admin_state_up": False}})["agent"]
    assert updated["admin_state_up"] is False
    status, body = api.put(f"/v2.0/agents/{agent['id']}", {"agent": {"host": "elsewhere"}})
    assert status == 400
    for bad in ({"agent": {"host": "h"}}, {"agent": {"host": "h", "agent_type": "t", "binary": "b", "x": 1}},
                {"agent": {"host": "h", "agent_type": "t", "binary": "b", "configurations": []}}):
        assert api.post("/provnet/v1/agents/report", bad)[0] == 400
    assert api.delete(f"/v2.0/agents/{agent['id']}")[0] == 204
    assert api.get(f"/v2.0/agents/{agent['id']}")[0] == 404


def test_unknown_urls_and_methods_are_neutron_errors(api: Client) -> None:
    status, body = api.get("/v2.0/floatingips")
    assert status == 404 and body["NeutronError"]["type"] == "HTTPNotFound"
    status, body = api.call("PATCH", "/v2.0/networks")
    assert status == 405 and "PATCH" in body["NeutronError"]["message"]


def test_observability(api: Client) -> None:
    assert api.ok("GET", "/healthz") == {"status": "ok"}
    assert api.ok("GET", "/readyz")["status"] == "ok"
    api.get("/v2.0/networks")
    rid = api.last.headers["X-Openstack-Request-Id"]
    assert rid.startswith("req-")
    api.get("/v2.0/networks", headers={"X-Openstack-Request-Id": "req-from-the-proxy"})
    assert api.last.headers["X-Openstack-Request-Id"] == "req-from-the-proxy"
    api.get("/v2.0/ports/nope")
    text = api.session.get(api.url + "/metrics").text
    assert 'provnet_api_requests_total{method="GET",route="/v2.0/networks",status="200"} 2.0' in text
    assert 'route="/v2.0/ports/{id}",status="404"' in text
    assert "provnet_api_request_duration_seconds_bucket" in text


def test_oversized_bodies_are_413_and_leave_nothing(api: Client) -> None:
    before = api.snapshot()
    status, body = api.post("/v2.0/networks", raw=b'{"network": {"name": "' + b"x" * (9 * 1024 * 1024) + b'"}}')
    assert status == 413 and body["NeutronError"]["message"] == "Request body too large."
    assert api.snapshot() == before


def test_agent_alive_follows_the_servers_agent_down_time(db_url: str) -> None:
    from datetime import timedelta

    from provnet.registry.base import utc_now

    with running_api(db_url, agent_down_time=1.0) as (client, registry):
        agent = client.ok("POST", "/provnet/v1/agents/report", {"agent": {
            "host": "h1", "agent_type": "Open vSwitch agent", "binary": "provnet-agent"}})["agent"]
        assert agent["alive"] is True
        registry.clock = lambda: utc_now() + timedelta(seconds=1.6)  # the server's time moves on, nobody sleeps
        assert client.ok("GET", f"/v2.0/agents/{agent['id']}")["agent"]["alive"] is False
        assert [a["alive"] for a in client.ok("GET", "/v2.0/agents?host=h1")["agents"]] == [False]
