# On SQLite the API writes inline on its event loop, except while another process holds the write lock: then the
# write waits in a thread and the API keeps answering everything else.
from __future__ import annotations

import sqlite3
import threading

import requests
from api_server import running_api


def test_a_write_behind_another_process_lock_waits_without_stalling_the_api(tmp_path) -> None:
    path = tmp_path / "provnet.sqlite"
    with running_api(f"sqlite:///{path}") as (client, registry):
        net, _ = client.seed()
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # e.g. the CLI, mid-write
        other.execute("BEGIN IMMEDIATE")
        result: dict = {}

        def create() -> None:
            result["answer"] = client.post("/v2.0/ports", {"port": {"network_id": net["id"], "name": "late"}})

        writer = threading.Thread(target=create)
        writer.start()
        try:
            # the loop is free: these answer while the write waits for the lock (a loop sleeping in SQLite's
            # 30 s busy handler would not answer before the 5 s timeout: the lock is held until the ROLLBACK)
            for path_ in ("/healthz", "/v2.0/networks", "/v2.0/ports"):
                answer = requests.get(client.url + path_, timeout=5)
                assert answer.status_code == 200, path_
            assert [p["name"] for p in client.ok("GET", "/v2.0/ports")["ports"]] == []
            assert writer.is_alive()  # waiting for the lock, not failed
        finally:
            other.execute("ROLLBACK")
            other.close()
            writer.join(timeout=30)
        status, body = result["answer"]
        assert status == 201 and body["port"]["name"] == "late"
        assert [p.name for p in registry.list_ports()] == ["late"]


def test_inline_writes_keep_every_answer_and_error(tmp_path) -> None:
    with running_api(f"sqlite:///{tmp_path / 'provnet.sqlite'}") as (client, registry):
        net, subnet = client.seed()
        made = [client.ok("POST", "/v2.0/ports", {"port": {"network_id": net["id"]}}, 201)["port"] for _ in range(25)]
        assert len({p["fixed_ips"][0]["ip_address"] for p in made}) == 25  # the seed's pool: .102-.126, all taken
        status, err = client.post("/v2.0/ports", {"port": {"network_id": net["id"]}})
        assert status == 409 and err["NeutronError"]["type"] == "IpAddressGenerationFailure"
        status, err = client.post("/v2.0/ports", {"port": {"network_id": net["id"], "colour": "red"}})
        assert status == 400 and "colour" in err["NeutronError"]["message"]
        assert len(registry.list_ports()) == 25
