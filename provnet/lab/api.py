# The lab's client of the controller's networking API: every call made from one thread that lives in the
# controller's network namespace, so its connections are made there (no relay, nothing in the host's namespace).
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provnet.dataplane import netns
from provnet.lab.keystone import AdminToken
from provnet.lab.state import LabState, lab_dir
from provnet.registry.remote import RemoteRegistry, TokenSource


class ControllerApi:
    """A Registry (RemoteRegistry's methods) reached from inside `namespace`, as a client there would reach it."""

    def __init__(self, namespace: str, url: str, timeout: float = 30.0, auth: TokenSource | None = None) -> None:
        self.namespace = namespace
        self.url = url
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="provnet-lab-api", initializer=netns.enter,
                                        initargs=(namespace,))
        self._remote = RemoteRegistry(url, timeout=timeout, auth=auth)

    @classmethod
    def for_lab(cls, state_path: str, state: LabState, timeout: float = 30.0) -> ControllerApi:
        """The controller's API of a lab that is up; behind Keystone (`lab up --keystone`) as its admin."""
        auth = AdminToken(lab_dir(state_path), state.keystone_port) if state.keystone_port else None
        return cls(state.controller, state.api_url, timeout, auth)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._remote, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._pool.submit(method, *args, **kwargs).result()

        return call

    def close(self) -> None:
        try:
            self._pool.submit(self._remote.close).result(5)
        finally:
            self._pool.shutdown(wait=False)
