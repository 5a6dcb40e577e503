# The async facade's thread pools: the API's list threads run at a lower CPU priority than its other reads, so
# clients paging through a large store give way to the host's metadata and DHCP services (issue 10 row 10).
from __future__ import annotations

import asyncio
import os
import threading

from provnet.api.backend import LIST_NICE, Backend
from provnet.registry.aio import AsyncRegistry
from provnet.registry.sql import SqlRegistry


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_pool_made_nicer_runs_its_calls_that_much_nicer_than_the_process() -> None:
    async def main() -> tuple[int, int]:
        nicer, plain = AsyncRegistry(None, threads=1, nice=7), AsyncRegistry(None, threads=1)  # type: ignore[arg-type]
        try:
            return await nicer(thread_nice), await plain(thread_nice)
        finally:
            nicer.close()
            plain.close()

    process = os.getpriority(os.PRIO_PROCESS, 0)
    nicer, plain = asyncio.run(main())
    assert nicer == min(19, process + 7)
    assert plain == process
    assert os.getpriority(os.PRIO_PROCESS, 0) == process  # the process (and the loop's thread) keep theirs


def test_the_apis_lists_run_niced_and_its_other_reads_do_not(tmp_path) -> None:
    registry = SqlRegistry(f"sqlite:///{tmp_path}/r.sqlite")
    backend = Backend(registry)
    process = os.getpriority(os.PRIO_PROCESS, 0)

    async def main() -> tuple[int, int]:
        return await backend.read_many(thread_nice), await backend.read(thread_nice)

    try:
        listing, single = asyncio.run(main())
    finally:
        backend.close()
    assert listing == min(19, process + LIST_NICE) and LIST_NICE > 0
    assert single == process
