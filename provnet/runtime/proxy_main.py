# `python -m provnet.runtime.proxy_main`: the metadata proxy as the L3 agent starts it, one per router or network,
# without the CLI (which loads every verb: ~1.1 CPU-s per process against ~0.25 s here; a burst starts many).
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from provnet.config import ConfigError, load_config
from provnet.metadata.proxy import DEFAULT_BIND, MetadataProxy
from provnet.runtime.process import StartupError, run_server

# the CLI's text log line (provnet.cli.logs), which this entry cannot import without loading the whole CLI
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with the terminating NUL
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m provnet.runtime.proxy_main",
                                description="One router's or one network's metadata proxy, as `provnet l3-agent` "
                                            "runs it inside qrouter-<id> (router mode: on every address, behind the "
                                            "redirect rules) or provnet-meta-<network> (network mode: bound to "
                                            "169.254.169.254:80 itself).")
    p.add_argument("--state-path", required=True, help="The L3 agent's state path.")
    p.add_argument("--debug", action="store_true", help="Log at DEBUG level.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--router-id", help="Serve this router's VMs (sets X-Neutron-Router-ID).")
    who.add_argument("--network-id", help="Serve this network's VMs (sets X-Neutron-Network-ID).")
    p.add_argument("--bind", default=DEFAULT_BIND,
                   help="Addresses to listen on, comma-separated; an IPv6 link-local one with its device "
                        f"(fe80::a9fe:a9fe%%ns-1234). Default: {DEFAULT_BIND} (router mode, behind the redirects).")
    p.add_argument("--port", type=int, required=True, help="Port to listen on (the rules redirect to it).")
    p.add_argument("--socket", required=True, help="The metadata agent's unix socket.")
    p.add_argument("--status-socket", default=None, help="Unix socket for /healthz, /readyz and /metrics.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config(overrides={"state_path": args.state_path, "debug": args.debug or None,
                                        "metadata_proxy_socket": args.socket, "metadata_port": args.port})
    except ConfigError as exc:
        print(f"metadata proxy: configuration: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if config.debug else logging.INFO, format=LOG_FORMAT,
                        datefmt=DATE_FORMAT)
    what = f"router {args.router_id}" if args.router_id else f"network {args.network_id}"
    status: str | None = args.status_socket or os.path.join(config.state_path, "metadata-proxy",
                                                            f"{args.router_id or args.network_id}.sock")
    if not args.status_socket and status is not None and len(status.encode()) > MAX_UNIX_PATH:
        # the agent leaves the option out when its own short path does not fit either: serve VMs regardless
        logging.getLogger("provnet.metadata_proxy").warning(
            "metadata proxy for %s: no status socket (/healthz, /metrics): %s is longer than a unix socket path "
            "may be (%d bytes); give --status-socket or a shorter state_path", what, status, MAX_UNIX_PATH)
        status = None
    try:
        proxy = MetadataProxy(socket_path=config.metadata_proxy_socket, router_id=args.router_id,
                              network_id=args.network_id, bind=args.bind, port=config.metadata_port,
                              status_socket=status)
        run_server(config, lambda c, registry: [proxy], needs_store=False)
    except (ConfigError, StartupError, OSError, ValueError) as exc:
        print(f"metadata proxy for {what}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
