# Stopping the networking API while remote agents long-poll its change feed: the long-polls are answered at once
# and the API stops, instead of both waiting for the long-poll's timeout (25 s by default, 60 s here).
from __future__ import annotations

import threading
import time
from pathlib import Path

import requests

from provnet.api.app import BACKEND_KEY
from provnet.api.thread import ApiThread
from provnet.registry import open_registry


def test_a_long_poll_in_flight_does_not_hold_the_api_open(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite:///{tmp_path}/p.sqlite")
    api = ApiThread(registry).start()
    try:
        revision = requests.get(f"{api.url}/provnet/v1/revision", timeout=10).json()["revision"]
        answers: list[int] = []
        waiting = threading.Thread(target=lambda: answers.append(requests.get(
            f"{api.url}/provnet/v1/changes", params={"after": revision, "timeout": 60}, timeout=120).status_code))
        waiting.start()
        feed = api.service._runner.app[BACKEND_KEY].feed  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while not (feed._advanced and feed._advanced._waiters):  # the long-poll waits in the feed (a real event)
            assert time.monotonic() < deadline, "the long-poll never reached the feed"
            time.sleep(0.01)
        stopper = threading.Thread(target=api.stop)
        stopper.start()
        stopper.join(30)
        waiting.join(30)
        assert not stopper.is_alive() and not waiting.is_alive(), "the long-poll kept the API from stopping"
        assert answers == [200]
    finally:
        if stopper.is_alive() or waiting.is_alive():
            stopper.join(90)
        registry.close()
