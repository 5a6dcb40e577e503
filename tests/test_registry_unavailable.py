# A database lost after start answers 503 ServiceUnavailable naming it (no password); a real SQL bug stays a 500.
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from api_server import SEED_NET, Client, running_api
from registry_support import fresh_pg_url

from provnet.api.app import writers_for
from provnet.api.thread import ApiThread
from provnet.registry import open_registry


class Relay:
    """A TCP relay on loopback in front of the test PostgreSQL: stopping it is the database going away (the
    open connections drop, new ones are refused), without touching the real server other tests share."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.stopped:
                    client.close()
                    return
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
            except OSError:
                pass
            self.listener.close()
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@contextmanager
def relayed_pg(db_url: str) -> Iterator[tuple[str, Relay]]:
    url = sa.make_url(db_url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    try:
        yield url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False), relay
    finally:
        relay.stop()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    return fresh_pg_url(request)


def test_lost_postgresql_gives_503_naming_the_database(pg_url: str) -> None:
    with relayed_pg(pg_url) as (url, relay):
        registry = open_registry(url)
        try:
            with ApiThread(registry, writers=writers_for(url)) as api:
                client = Client(api.url)
                net = client.ok("POST", "/v2.0/networks", {"network": SEED_NET}, 201)["network"]
                client.ok("GET", f"/v2.0/networks/{net['id']}")
                relay.stop()  # the database goes away: open connections drop, new ones are refused
                calls = [("GET", "/v2.0/networks", None), ("GET", f"/v2.0/networks/{net['id']}", None),
                         ("POST", "/v2.0/networks", {"network": {"name": "x"}}),
                         ("PUT", f"/v2.0/networks/{net['id']}", {"network": {"name": "y"}}),
                         ("GET", "/provnet/v1/revision", None)]
                for method, path, body in calls:
                    status, err = client.call(method, path, body)
                    assert status == 503, (method, path, status, err)
                    fault = err["NeutronError"]
                    assert fault["type"] == "ServiceUnavailable"
                    assert fault["message"].startswith(f"The database postgresql+psycopg://provnet:***@127.0.0.1:"
                                                       f"{relay.port}/"), fault["message"]
                    assert "unavailable" in fault["message"] and ":provnet@" not in fault["message"]
                client.session.close()
        finally:
            registry.close()


def test_sql_bug_stays_a_500(db_url: str) -> None:
    with running_api(db_url) as (client, registry):
        client.ok("POST", "/v2.0/routers", {"router": {"name": "r"}}, 201)
        with registry.engine.begin() as conn:  # a schema the code does not expect: a bug, not an outage
            conn.execute(sa.text("ALTER TABLE routers RENAME TO routers_gone"))
        status, err = client.get("/v2.0/routers")
        assert status == 500 and err["NeutronError"]["type"] != "ServiceUnavailable"
        status, _ = client.post("/v2.0/routers", {"router": {"name": "r2"}})
        assert status == 500
        with registry.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE routers_gone RENAME TO routers"))
        assert len(client.ok("GET", "/v2.0/routers")["routers"]) == 1
