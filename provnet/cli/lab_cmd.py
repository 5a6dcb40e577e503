# `provnet lab up|check|status|down`: the seed's whole topology in network namespaces on this machine.
from __future__ import annotations

import sys

import click

from provnet.lab import plan

LAB_HELP = f"""The seed's deployment, live, in network namespaces on this machine (root).

\b
The physical world, and only that, is built by the lab:
  hosts host1..N          each with {plan.BRIDGE} and its uplink to the provider segment, and an address on
                          the management network ({plan.MGMT_CIDR})
  controller              {plan.CONTROLLER_IP}, running `provnet serve` (networking API :{plan.API_PORT},
                          metadata API :{plan.METADATA_API_PORT})
  external router         {plan.EXTERNAL_ROUTER_IP}, with {plan.UPSTREAM_CIDR} behind it
  DHCP server's host      {plan.DHCP_SERVER_IP}, running `provnet dhcp` (a reservation per port, 121/249)

On each host it runs what docs/deploy.md tells an operator to run: `provnet agent` (the L2 agent: port
status, port firewall), `provnet metadata-agent` and `provnet l3-agent` (the qrouter- namespace, qr- port
172.16.1.2, the metadata rules and proxy, on whichever host the router is scheduled to). It creates the
seed's network, subnet, router, instances and ports through the API, and plugs each VM as Nova would (a
tap device on its host's bridge), spread over the hosts. Every service runs under one supervisor that
restarts it when it dies. State, configs, stores and logs live in <state-path>/lab (default state path
{{default}}).

\b
Typical session:
  provnet lab up --hosts 2 --vms 3  # build (cleans up an earlier or crashed lab first)
  provnet lab check                 # per VM: lease, routes, port, metadata, upstream, cloud-init, L3 agent
  provnet lab up --mode network --ipv6  # no router (metadata port), and IPv6 metadata (fe80::a9fe:a9fe)
  provnet lab status                # what exists and runs now, from the machine and the live registry
  provnet lab failover              # the router's host fails: seconds until every VM is served again
  provnet lab down                  # remove every namespace, link, rule and process
"""


def lab_state_path(ctx: click.Context) -> str:
    """The global --state-path when given, else the lab's own default (never the real /var/lib/provnet)."""
    from provnet.lab.state import DEFAULT_LAB_STATE_PATH

    config = ctx.obj.config
    return config.state_path if config.source("state_path") != "default" else DEFAULT_LAB_STATE_PATH


def _progress(line: str) -> None:
    click.echo(line, err=True)


def _need_root() -> None:
    import os

    if os.geteuid() != 0:
        raise click.ClickException("the lab needs root (network namespaces, iptables); run it with sudo")


def register(group: click.Group) -> None:
    from provnet.lab.state import DEFAULT_LAB_STATE_PATH

    @group.group("lab", help=LAB_HELP.replace("{default}", DEFAULT_LAB_STATE_PATH))
    def lab() -> None:
        pass

    @lab.command("up")
    @click.option("--hosts", default=2, show_default=True, type=int,
                  help=f"Number of hosts with the provider bridge, 1..{plan.MAX_HOSTS}; the VMs are spread over "
                       "them.")
    @click.option("--vms", default=3, show_default=True, type=int,
                  help=f"Number of VMs (instances with a port each), 1..{plan.MAX_VMS}.")
    @click.option("--dhcp-client", type=click.Choice(plan.DHCP_CLIENTS), default="udhcpc", show_default=True,
                  help="DHCP client in the VMs: busybox udhcpc (as cirros) or ISC dhclient.")
    @click.option("--keystone", is_flag=True,
                  help="Put the lab behind a real Keystone (scripts/keystone.sh, 127.0.0.1): the controller's "
                       "networking API validates tokens, the seed is made as the admin through it, the hosts' agents "
                       "and the DHCP server run as a service user (clouds.yaml in <state-path>/lab).")
    @click.option("--mode", type=click.Choice(plan.MODES), default="router", show_default=True,
                  help="How VMs reach 169.254.169.254 (every machine's [metadata] mode). router: the seed's router1, "
                       "whose qr- device holds the gateway 172.16.1.2 (its L3 agent's namespace and proxy). network: "
                       "no router at all, the external router 172.16.1.1 is the subnet's gateway, the registry makes "
                       "phy_net's metadata port (network:distributed) and each host with VMs serves it in its L3 "
                       "agent's provnet-meta-<network> namespace.")
    @click.option("--ipv6", is_flag=True,
                  help=f"Add an IPv6 subnet {plan.CIDR6} (ipv6_address_mode slaac) whose router advertisements come "
                       "from the external router (dnsmasq, RA only); odd VMs make EUI-64 addresses, even ones stable "
                       f"privacy ones; `lab check` also reads metadata over http://[{plan.METADATA_IP6}%eth0].")
    @click.pass_context
    def up(ctx: click.Context, hosts: int, vms: int, dhcp_client: str, keystone: bool, mode: str,
           ipv6: bool) -> None:
        """Build the lab: the physical world, the services each machine runs, the seed through the API, VMs
        plugged on their hosts, their leases.

        An earlier lab in the same state path (also one left by a crash) is removed first. Progress goes to
        stderr; on failure the message names the failed step and its log, and `provnet lab down` cleans up.

        \b
        Example:
          provnet lab up --hosts 2 --vms 3 --dhcp-client dhclient
          provnet lab up --keystone        # the same behind Keystone, services with a service user
          provnet lab up --mode network    # no router: metadata via the network's metadata port
          provnet lab up --ipv6 --vms 2    # also IPv6 (SLAAC): metadata over fe80::a9fe:a9fe
        """
        from provnet.lab import build

        _need_root()
        for value, parse, hint in ((vms, plan.parse_vms, "--vms"), (hosts, plan.parse_hosts, "--hosts")):
            try:
                parse(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint=hint) from None
        path = lab_state_path(ctx)
        try:
            state = build.up(path, vms, dhcp_client, _progress, hosts, keystone=keystone, mode=mode, ipv6=ipv6)
        except (build.LabError, OSError, ValueError, RuntimeError) as exc:
            raise click.ClickException(f"lab up failed: {exc}\n(state in {path}/lab; `provnet{_sp(ctx)} lab down` "
                                       "removes what was built)") from None
        where = f"router {state.router_id}" if state.mode == "router" else \
            f"no router, metadata port {state.metadata_ip}"
        click.echo(f"lab {state.suffix} is up ({state.mode} mode{', IPv4 and IPv6' if state.ipv6 else ''}): "
                   f"{len(state.hosts)} host(s), {len(state.vms)} VM(s), {where}")
        click.echo(f"next: provnet{_sp(ctx)} lab check")

    @lab.command("check")
    @click.pass_context
    def check(ctx: click.Context) -> None:
        """From inside each VM: its lease is its port's IP, its routes are the seed's (in network mode
        169.254.169.254 via the metadata port), curl 169.254.169.254 returns its own metadata (proxy -> agent
        -> API), upstream goes via 172.16.1.1, and cloud-init's OpenStack reader (/usr/bin/python3) reads it;
        with --ipv6 its addresses (EUI-64 or stable privacy) and its own metadata over
        http://[fe80::a9fe:a9fe%eth0] (curl and cloud-init's reader). From the API: its port is ACTIVE on its
        host (the L2 agent saw its device), and which host's L3 agent serves its router (alive, with the
        router's namespace) or, in network mode, that its host's provnet-meta- namespace has the proxy. The
        last line names the mode. Exits 1 if any cell fails."""
        from provnet.lab import check as lab_check
        from provnet.lab.state import load

        _need_root()
        path = lab_state_path(ctx)
        state = _load(load, path, _sp(ctx))
        if not state.complete or not state.vms:
            raise click.ClickException(f"the lab in {path}/lab is incomplete (`lab up` did not finish): run "
                                       f"`provnet{_sp(ctx)} lab up` again (it cleans up first) or "
                                       f"`provnet{_sp(ctx)} lab down`")
        ok, table = lab_check.check(path, state)
        click.echo(table)
        if not ok:
            click.echo(f"lab check: FAILED ({lab_check.log_hint(path)})", err=True)
            sys.exit(1)
        click.echo("lab check: all ok")

    @lab.command("status", epilog="\b\nExamples:\n  provnet lab status\n"
                 "  provnet lab status --format svg -o lab.svg    # the topology as it stands, drawn")
    @click.option("--format", "fmt", type=click.Choice(["text", "svg"]), default="text", show_default=True,
                  help="text: a report; svg: the topology drawn (machines, devices with MACs and addresses, the "
                       "VMs' routes, services, which L3 agent hosts the router, what is down in red).")
    @click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
                  help="Write to this file instead of stdout.")
    @click.pass_context
    def status(ctx: click.Context, fmt: str, output: str | None) -> None:
        """What stands now: the lab's namespaces (the agents' qrouter- ones too) present or GONE, every
        service under the supervisor (pid, running or STOPPED, restarts), the router's proxy, the agents and
        the VMs' ports as the live registry has them, which host's L3 agent hosts the router, and how to look
        inside. Read from the machine and the API, so it is true after a kill -9."""
        from provnet.lab import draw
        from provnet.lab import status as lab_status
        from provnet.lab.state import load

        _need_root()
        path = lab_state_path(ctx)
        state = _load(load, path, _sp(ctx))
        snap = lab_status.snapshot(path, state)
        text = draw.render_svg(draw.gather(state, snap)) if fmt == "svg" else \
            lab_status.render_text(path, state, snap) + "\n"
        if output is None:
            click.echo(text, nl=False)
            return
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"wrote {output}", err=True)

    @lab.command("failover")
    @click.pass_context
    def failover(ctx: click.Context) -> None:
        """The host whose L3 agent serves the router fails: its L3 agent is killed and its router namespace
        goes with its proxy. Prints how long until every VM gets its own metadata again from another host
        (agent_down_time plus at most a report interval, then the new host builds the router), then starts
        the failed host's L3 agent again. Needs --hosts 2 or more; exits 1 if the VMs are not served again.

        \b
        Example:
          provnet lab failover
        """
        from provnet.lab import failover as lab_failover
        from provnet.lab.state import load
        from provnet.lab.supervisor import ControlError

        _need_root()
        path = lab_state_path(ctx)
        state = _load(load, path, _sp(ctx))
        if not state.complete:
            raise click.ClickException(f"the lab in {path}/lab is incomplete: run `provnet{_sp(ctx)} lab up` again")
        if state.mode != "router":
            raise click.ClickException(f"the lab is in {state.mode} mode: there is no router to fail over (each host "
                                       "serves its own VMs in its provnet-meta- namespace)")
        try:
            outcome = lab_failover.failover(path, state, _progress)
        except (lab_failover.FailoverError, ControlError) as exc:
            raise click.ClickException(f"failover: {exc}") from None
        click.echo(f"router1 moved from {outcome.from_host} to {outcome.to_host}; every VM served again after "
                   f"{outcome.seconds:.1f} s (the API named the new host after {outcome.router_moved_after:.1f} s)")

    @lab.command("restart")
    @click.argument("service")
    @click.pass_context
    def restart(ctx: click.Context, service: str) -> None:
        """Restart one lab service by hand, as `systemctl restart` would on a real host: SIGTERM (SIGKILL after
        10 s), then started again under the supervisor; `lab status` shows its new pid. SERVICE is a name
        from `lab status` (e.g. host1-l3-agent, controller-serve).

        
        Example:
          provnet lab restart host2-agent
        """
        from provnet.lab import supervisor
        from provnet.lab.state import lab_dir, load

        _need_root()
        path = lab_state_path(ctx)
        _load(load, path, _sp(ctx))
        try:
            answer = supervisor.request(lab_dir(path), {"op": "restart", "name": service},
                                        timeout=supervisor.RESTART_GRACE + 10)
        except supervisor.ControlError as exc:
            raise click.ClickException(f"restart: {exc}") from None
        click.echo(f"{service} restarted: process {answer.get('pid')}")

    @lab.command("down")
    @click.pass_context
    def down(ctx: click.Context) -> None:
        """Stop every lab process and remove every namespace (with its links) and rule the lab made, and the
        lab's store. Safe to run twice and after a crash; logs stay in <state-path>/lab/logs."""
        from provnet.lab import teardown

        _need_root()
        path = lab_state_path(ctx)
        try:
            done = teardown.down(path, _progress)
        except ValueError as exc:  # an unreadable state file: say so, remove nothing
            raise click.ClickException(str(exc)) from None
        if done:
            click.echo("lab is down")
        else:
            click.echo(f"no lab in {path}/lab (`provnet{_sp(ctx)} lab up` builds one)")


def _sp(ctx: click.Context) -> str:
    config = ctx.obj.config
    return f" --state-path {config.state_path}" if config.source("state_path") != "default" else ""


def _load(load, path: str, sp: str = ""):
    try:
        state = load(path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if state is None:
        raise click.ClickException(f"no lab in {path}/lab: run `provnet{sp} lab up` first")
    return state
