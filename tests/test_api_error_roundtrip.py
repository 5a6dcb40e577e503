# Every NeutronError class in model/errors.py comes back through the API and RemoteRegistry as itself, same message.
from __future__ import annotations

import inspect
import re

import pytest
from api_server import SEED_NET, SEED_SUBNET

from provnet.api.thread import ApiThread
from provnet.model import errors
from provnet.registry import open_registry
from provnet.registry.remote import RemoteRegistry

# enumerated from the module, so a class added later is covered without touching this test
ERROR_CLASSES = sorted((cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                        if issubclass(cls, errors.NeutronError) and cls.__module__ == errors.__name__),
                       key=lambda cls: cls.__name__)


def sample(cls: type[errors.NeutronError]) -> errors.NeutronError:
    """An instance with every placeholder of its message filled, so a lost or changed message shows."""
    keys = re.findall(r"%\((\w+)\)s", cls.message_format)
    return cls(**{key: f"<{key} of {cls.__name__}>" for key in keys})


@pytest.fixture
def pair(db_url: str):
    local = open_registry(db_url)
    with ApiThread(local) as api:
        remote = RemoteRegistry(api.url)
        try:
            yield local, remote
        finally:
            remote.close()
    local.close()


def test_the_enumeration_sees_the_classes_that_used_to_get_lost() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"PortInUse", "ServicePortInUse", "InstanceExists", "InvalidIpForSubnet", "RouterInterfaceNotFound",
            "AddressPairAndPortSecurityRequired", "NetworkNotFound", "HTTPBadRequest"} <= names
    assert len(ERROR_CLASSES) >= 40


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_class_round_trips(tmp_path, cls: type[errors.NeutronError]) -> None:
    """The registry raises it (a real SqlRegistry whose get_network is made to raise it: no real call raises every
    class on demand); the real API answers it, the real RemoteRegistry raises the same class, status, message."""
    local = open_registry(f"sqlite:///{tmp_path}/r.sqlite")
    raised = sample(cls)

    def get_network(network_id: str):
        raise raised

    local.get_network = get_network  # type: ignore[method-assign]
    with ApiThread(local) as api:
        remote = RemoteRegistry(api.url)
        try:
            with pytest.raises(errors.NeutronError) as info:
                remote.get_network("any")
        finally:
            remote.close()
    local.close()
    assert type(info.value) is cls
    if cls is errors.NotAuthenticated:  # a client told 401 says what to give it (identity), not the server's line
        assert (info.value.status, info.value.type) == (401, cls.__name__) and "--os-cloud" in info.value.message
        return
    assert (info.value.status, info.value.message, info.value.type) == (raised.status, raised.message, cls.__name__)


def remote_error(fn, *args) -> errors.NeutronError:
    with pytest.raises(errors.NeutronError) as info:
        fn(*args)
    return info.value


def test_real_registry_errors_keep_their_class_through_http(pair) -> None:
    """The four the architecture issue saw come back as plain Conflict/BadRequest, raised by the real rules."""
    local, remote = pair
    net = remote.create_network(SEED_NET)
    subnet = remote.create_subnet({**SEED_SUBNET, "network_id": net.id})
    router = remote.create_router({"name": "r"})
    port = remote.create_port({"network_id": net.id, "device_id": "vm1"})
    cases = [
        (errors.PortInUse, remote.add_router_interface, router.id, None, port.id),
        (errors.InvalidIpForSubnet, remote.create_port,
         {"network_id": net.id, "fixed_ips": [{"subnet_id": subnet.id, "ip_address": "10.9.9.9"}]}),
        (errors.InvalidIpForNetwork, remote.create_port,
         {"network_id": net.id, "fixed_ips": [{"ip_address": "10.9.9.9"}]}),
        (errors.RouterInterfaceNotFound, remote.remove_router_interface, router.id, None, "nope"),
    ]
    interface = remote.add_router_interface(router.id, subnet.id)
    cases.append((errors.ServicePortInUse, remote.delete_port, interface["port_id"]))
    instance = remote.create_instance({"name": "vm"})
    cases.append((errors.InstanceExists, remote.create_instance, {"id": instance.id}))
    for cls, fn, *args in cases:
        got = remote_error(fn, *args)
        expected = remote_error(getattr(local, fn.__name__), *args)
        assert type(got) is cls and type(expected) is cls, (cls, got, expected)
        assert got.message == expected.message and got.status == expected.status
