# `provnet lab up|check|status|down`: the seed's whole topology in network namespaces on this machine.
from __future__ import annotations

import sys

import click

from provnet.lab import plan

LAB_HELP = f"""The seed's topology, live, in network namespaces on this machine (root).

\b
  fabric namespace        bridge {plan.BRIDGE}: everything below is plugged into it
  external router         {plan.EXTERNAL_ROUTER_IP}, with {plan.UPSTREAM_CIDR} behind it
  qrouter-<router id>     qr- port 172.16.1.2 (the subnet's gateway_ip), the L3 agent's redirect of
                          169.254.169.254:80 to the metadata proxy on {plan.METADATA_PORT}
  DHCP server             provnet dhcp at {plan.DHCP_SERVER_IP}, one reservation per port, routes 121/249
  VMs                     one namespace per instance, its port's MAC, a real DHCP client, Neutron's
                          port firewall (anti-spoofing, DHCP) where it meets the bridge
  metadata agent and API  on this host, loopback and a unix socket

The registry is made with the seed's own commands (net-create phy_net ..., subnet-create ...).
State, config, store and logs live in <state-path>/lab (default state path {{default}}).

\b
Typical session:
  provnet lab up --vms 3            # build (cleans up an earlier or crashed lab first)
  provnet lab check                 # lease, routes, metadata, upstream, cloud-init per VM
  provnet lab status                # what exists, what runs, how to enter a VM
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
    @click.option("--vms", default=3, show_default=True, type=int,
                  help=f"Number of VMs (instances with a port each), 1..{plan.MAX_VMS}.")
    @click.option("--dhcp-client", type=click.Choice(plan.DHCP_CLIENTS), default="udhcpc", show_default=True,
                  help="DHCP client in the VMs: busybox udhcpc (as cirros) or ISC dhclient.")
    @click.option("--keystone", is_flag=True,
                  help="Put the lab behind a real Keystone (scripts/keystone.sh, 127.0.0.1): the networking API "
                       "validates tokens, the seed's commands run as the admin through it, the metadata agent, "
                       "metadata API and DHCP server as a service user (clouds.yaml in <state-path>/lab).")
    @click.pass_context
    def up(ctx: click.Context, vms: int, dhcp_client: str, keystone: bool) -> None:
        """Build the lab: registry, namespaces, bridge, rules, services, VMs with leases.

        An earlier lab in the same state path (also one left by a crash) is removed first. Progress goes to
        stderr; on failure the message names the failed step and its log, and `provnet lab down` cleans up.

        \b
        Example:
          provnet lab up --vms 3 --dhcp-client dhclient
          provnet lab up --keystone        # the same behind Keystone, services with a service user
        """
        from provnet.lab import build

        _need_root()
        try:
            plan.parse_vms(vms)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--vms") from None
        path = lab_state_path(ctx)
        try:
            state = build.up(path, vms, dhcp_client, _progress, keystone=keystone)
        except (build.LabError, OSError, ValueError, RuntimeError) as exc:
            raise click.ClickException(f"lab up failed: {exc}\n(state in {path}/lab; `provnet{_sp(ctx)} lab down` "
                                       "removes what was built)") from None
        click.echo(f"lab {state.suffix} is up: {len(state.vms)} VMs, router {state.router_id}")
        click.echo(f"next: provnet{_sp(ctx)} lab check")

    @lab.command("check")
    @click.pass_context
    def check(ctx: click.Context) -> None:
        """From inside each VM: its lease is its port's IP, its routes are the seed's, curl 169.254.169.254
        returns its own metadata (redirect -> proxy -> agent -> API), upstream goes via 172.16.1.1, and
        cloud-init's OpenStack reader (/usr/bin/python3) reads it. Exits 1 if any cell fails."""
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

    @lab.command("status")
    @click.pass_context
    def status(ctx: click.Context) -> None:
        """What the lab made: namespaces (present or gone), processes (running or not), VMs, and how to look
        inside (`ip netns exec <vm> ip route`, the lab's provnet.conf for `provnet port-list`)."""
        from provnet.dataplane import netns
        from provnet.lab import procs
        from provnet.lab.state import lab_dir, load

        path = lab_state_path(ctx)
        state = _load(load, path, _sp(ctx))
        click.echo(f"lab {state.suffix} in {lab_dir(path)} ({'complete' if state.complete else 'INCOMPLETE'}), "
                   f"DHCP client {state.dhcp_client}, router {state.router_id}")
        click.echo("namespaces:")
        for ns in state.namespaces:
            click.echo(f"  {ns:<48} {'present' if netns.namespace_exists(ns) else 'GONE'}")
        click.echo("processes:")
        for p in state.processes:
            click.echo(f"  {p.name:<24} pid {p.pid:<8} {'running' if procs.is_running(p) else 'STOPPED':<8} "
                       f"{p.namespace or '(host)'}")
        click.echo("VMs:")
        for vm in state.vms:
            click.echo(f"  {vm.name:<12} {vm.ip:<14} {vm.mac}  instance {vm.instance_id}")
        click.echo("look inside:")
        if state.vms:
            click.echo(f"  ip netns exec {state.vms[0].namespace} ip route")
            click.echo(f"  ip netns exec {state.vms[0].namespace} curl http://169.254.169.254/openstack/latest/"
                       "meta_data.json")
        click.echo(f"  provnet --config-file {lab_dir(path)}/provnet.conf port-list")
        click.echo(f"  logs: {lab_dir(path)}/logs")

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
