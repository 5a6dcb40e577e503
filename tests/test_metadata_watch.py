# ETags and watch through the real agent and API on a real registry (SQLite and PostgreSQL): an ETag on every
# answer, If-None-Match -> 304, GCE's long-poll woken by the change feed, its bounds; tags (opt-in) and the audit
# trail of secret reads.
from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from metadata_chain import Chain, agent_get, api_get, build_seed

from provnet.registry import open_registry


@pytest.fixture
def watched(db_url, tmp_path):
    registry = open_registry(db_url)
    seed = build_seed(registry)
    chain = Chain(registry, tmp_path, watch_max_per_instance=2, watch_max_total=3)
    yield registry, seed, chain
    chain.close()
    registry.close()


def via(seed, ip="172.16.1.103", extra=()):
    return [("X-Forwarded-For", ip), ("X-Neutron-Router-ID", seed.router_id), *extra]


def test_every_answer_has_an_etag_that_changes_with_the_answer(watched):
    registry, seed, chain = watched
    vm1 = seed.instances["vm1"]
    paths = ("/latest/meta-data/", "/latest/meta-data/hostname", "/openstack/latest/meta_data.json",
             "/openstack/latest/network_data.json", "/openstack/latest/user_data", "/latest/meta-data/nothing")
    first = {p: agent_get(chain, p, via(seed)) for p in paths}
    assert all(a.headers.get("etag", "").startswith('"') for a in first.values())
    # meta_data.json's random_seed is fresh on every GET, its ETag is not (it derives from the rest)
    again = agent_get(chain, "/openstack/latest/meta_data.json", via(seed))
    assert again.body != first["/openstack/latest/meta_data.json"].body
    assert again.headers["etag"] == first["/openstack/latest/meta_data.json"].headers["etag"]
    for path, answer in first.items():
        if answer.status == 200:
            cond = agent_get(chain, path, via(seed, extra=[("If-None-Match", answer.headers["etag"])]))
            assert cond.status == 304 and cond.body == b"" and cond.headers["etag"] == answer.headers["etag"]
    registry.update_instance(vm1, {"hostname": "renamed"})
    chain.settle()
    after = {p: agent_get(chain, p, via(seed)) for p in paths}
    assert after["/latest/meta-data/hostname"].headers["etag"] != first["/latest/meta-data/hostname"].headers["etag"]
    assert after["/latest/meta-data/"].headers["etag"] == first["/latest/meta-data/"].headers["etag"]  # same list
    stale = agent_get(chain, "/latest/meta-data/hostname",
                      via(seed, extra=[("If-None-Match", first["/latest/meta-data/hostname"].headers["etag"])]))
    assert stale.status == 200 and stale.text.startswith("renamed")


def _wait_in_thread(chain, seed, path, etag, results, timeout=30, ip="172.16.1.103"):
    def run():
        started = time.monotonic()
        answer = agent_get(chain, f"{path}?wait_for_change=true&last_etag={etag.strip(chr(34))}&timeout_sec={timeout}",
                           via(seed, ip))
        results.append((answer, time.monotonic() - started))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _waiting(chain, count, deadline=10.0):
    end = time.monotonic() + deadline
    while chain.api.watchers.total < count:
        assert time.monotonic() < end, f"{chain.api.watchers.total} waiters, expected {count}"
        time.sleep(0.01)


def test_watch_returns_when_a_property_changes(watched):
    registry, seed, chain = watched
    vm1 = seed.instances["vm1"]
    path = "/openstack/latest/meta_data.json"
    etag = agent_get(chain, path, via(seed)).headers["etag"]
    results: list = []
    thread = _wait_in_thread(chain, seed, path, etag, results)
    _waiting(chain, 1)
    assert not results  # it waits
    changed_at = time.monotonic()
    registry.update_instance(vm1, {"metadata": {"vm": "vm1", "role": "db"}})
    thread.join(20)  # a generous deadline for the event, not a threshold
    (answer, _), = results
    assert answer.status == 200 and json.loads(answer.body)["meta"]["role"] == "db"
    assert answer.headers["etag"] != etag
    print(f"watch woken {time.monotonic() - changed_at:.3f} s after the commit returned")
    assert chain.api.watchers.total == 0
    # a stale last_etag answers at once; an unchanged one waits (bounded by timeout_sec)
    assert agent_get(chain, f"{path}?wait_for_change=true&last_etag=0000", via(seed)).status == 200


def test_watch_on_the_port_address_and_user_data(watched):
    registry, seed, chain = watched
    vm1 = seed.instances["vm1"]
    path = "/latest/user-data"
    etag = agent_get(chain, path, via(seed)).headers["etag"]
    results: list = []
    thread = _wait_in_thread(chain, seed, path, etag, results)
    _waiting(chain, 1)
    import base64
    registry.update_instance(vm1, {"user_data": base64.b64encode(b"#cloud-config\nnew: 1\n").decode()})
    thread.join(20)
    assert results and results[0][0].text == "#cloud-config\nnew: 1\n"


def test_watch_limits_per_instance_and_in_all(watched):
    registry, seed, chain = watched
    path = "/latest/meta-data/hostname"
    etag = agent_get(chain, path, via(seed)).headers["etag"]
    results: list = []
    threads = [_wait_in_thread(chain, seed, path, etag, results) for _ in range(2)]
    _waiting(chain, 2)
    refused = agent_get(chain, f"{path}?wait_for_change=true&last_etag={etag.strip(chr(34))}", via(seed))
    assert refused.status == 429 and refused.headers.get("retry-after")
    etag2 = agent_get(chain, path, via(seed, "172.16.1.104")).headers["etag"]
    threads.append(_wait_in_thread(chain, seed, path, etag2, results, ip="172.16.1.104"))
    _waiting(chain, 3)
    full = agent_get(chain, f"{path}?wait_for_change=true&last_etag={etag2.strip(chr(34))}",
                     via(seed, "172.16.1.104"))
    assert full.status == 429  # the total bound
    registry.update_instance(seed.instances["vm1"], {"hostname": "x1"})
    registry.update_instance(seed.instances["vm2"], {"hostname": "x2"})
    for thread in threads:
        thread.join(20)
    assert len(results) == 3 and chain.api.watchers.total == 0


@pytest.mark.parametrize("query", ["wait_for_change=maybe", "wait_for_change=true&timeout_sec=-1",
                                   "wait_for_change=true&timeout_sec=abc", "wait_for_change=true&last_etag=",
                                   "wait_for_change=true&wait_for_change=true"])
def test_bad_watch_queries_are_400(watched, query):
    _, seed, chain = watched
    assert agent_get(chain, f"/latest/meta-data/?{query}", via(seed)).status == 400


def test_tags_are_opt_in(watched):
    registry, seed, chain = watched
    vm1 = seed.instances["vm1"]
    assert agent_get(chain, "/latest/meta-data/tags/instance/", via(seed)).status == 404
    md = json.loads(agent_get(chain, "/openstack/latest/meta_data.json", via(seed)).body)
    assert "tags" not in md
    registry.update_instance(vm1, {"metadata": {"vm": "vm1", "Name": "web-1", "provnet:instance_metadata_tags":
                                                "enabled"}})
    chain.settle()
    assert agent_get(chain, "/latest/meta-data/tags/instance/", via(seed)).text == "Name\nvm"
    assert agent_get(chain, "/latest/meta-data/tags/instance/Name", via(seed)).text == "web-1"
    md = json.loads(agent_get(chain, "/openstack/latest/meta_data.json", via(seed)).body)
    assert md["tags"] == {"Name": "web-1", "vm": "vm1"} and "provnet:instance_metadata_tags" not in md["meta"]


def test_secret_reads_are_audited(watched, caplog):
    registry, seed, chain = watched
    caplog.set_level(logging.INFO, "provnet.metadata.audit")
    for path in ("/latest/user-data", "/openstack/latest/user_data", "/openstack/latest/vendor_data.json",
                 "/openstack/latest/vendor_data2.json", "/openstack/latest/password", "/latest/meta-data/"):
        agent_get(chain, path, via(seed, extra=[("X-Openstack-Request-Id", "req-00000000-0000-0000-0000-00000000"
                                                                          "0001")]))
    records = [r for r in caplog.records if r.name == "provnet.metadata.audit"]
    kinds = [r.fields["kind"] for r in records]
    assert kinds == ["user_data", "user_data", "vendor_data", "vendor_data", "password"]
    first = records[0].fields
    assert first["instance_id"] == seed.instances["vm1"] and first["port_id"] == seed.ports["vm1"]
    assert first["source_ip"] == "172.16.1.103" and first["path"] == "/latest/user-data"
    assert first["bytes"] > 0 and first["token"] is False and first["request_id"].startswith("req-")
    page = api_get(chain.api.port, "/metrics", []).text
    assert 'provnet_metadata_api_secret_reads_total{kind="user_data",token="no"} 2.0' in page
