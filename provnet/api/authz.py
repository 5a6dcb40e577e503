# Neutron's policy applied to the networking API: what the handlers call before and after the registry.
"""The handlers call one method per step (`visible`, `show`, `view`, `check_create`, `check_update`,
`check_delete`, `check_action`); each does what Neutron's API layer (neutron/api/v2/base.py) does at that step:

- a resource the caller may not `get_<member>` is, to them, not there: its NotFound (404), never a 403;
- a create or update is checked against `<action>` AND `<action>:<attr>` for every policed attribute the body sets
  (Neutron's match rule); a failure is 403 PolicyNotAuthorized with Neutron's message;
- a port or subnet on someone else's (unshared) network is a 404; a `project_id` other than the caller's is a 400
  unless the caller is admin or a service;
- a response loses the attributes whose `get_<member>:<attr>` rule the caller fails (provider:*, binding:*).

Evaluation is pure and synchronous; when a rule needs a network the request has not read yet (its owner for
`%(network:project_id)s`, its `shared` or `router:external`), evaluation raises NeedNetworks, the networks are read
off the event loop (one registry call for all of a list's networks), and evaluation runs again. A network's owner
never changes, so it is remembered across requests (as Neutron's owner check caches it); `shared` and
`router:external` are read fresh for each request that needs them.

Without authentication (noauth) every caller is an admin and none of this runs.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from provnet.api.middleware import RequestContext
from provnet.identity.neutron_policy import MatchRule, match_rule
from provnet.identity.policy import Policy
from provnet.model import errors
from provnet.model.resources import Network

T = TypeVar("T")
Read = Callable[..., Awaitable[Any]]  # Backend.read: a registry call off the event loop

NOT_FOUND: dict[str, Callable[[str], errors.NeutronError]] = {
    "network": lambda i: errors.NetworkNotFound(net_id=i),
    "subnet": lambda i: errors.SubnetNotFound(subnet_id=i),
    "port": lambda i: errors.PortNotFound(port_id=i),
    "router": lambda i: errors.RouterNotFound(router_id=i),
    "agent": lambda i: errors.AgentNotFound(id=i),
}
MAX_OWNERS = 100_000  # networks whose owner is remembered
MAX_ROUNDS = 8  # evaluation rounds per step (each reads the networks the previous one asked for)
PROJECT_MESSAGE = ("Specifying 'project_id' other than the authenticated project in request is not allowed for the "
                   "current user.")


class NeedNetworks(Exception):
    """Raised by evaluation that needs networks not read yet (never a KeyError: rules must not take it for 'no')."""

    def __init__(self, network_ids: Iterable[str]) -> None:
        super().__init__("networks needed")
        self.network_ids = set(network_ids)


class Networks:
    """What one request knows of the networks its rules ask about (pure: reading is Authz's job)."""

    def __init__(self, owners: dict[str, str]) -> None:
        self._owners = owners  # shared across requests: network id -> project id (never changes)
        self._full: dict[str, Network | None] = {}

    def known(self, network_id: str) -> bool:
        return network_id in self._full

    def add(self, network_id: str, network: Network | None) -> None:
        self._full[network_id] = network
        if network is not None:
            if len(self._owners) >= MAX_OWNERS:
                self._owners.clear()
            self._owners[network_id] = network.project_id

    def full(self, network_id: str) -> Network | None:
        if network_id not in self._full:
            raise NeedNetworks([network_id])
        return self._full[network_id]

    def owner(self, network_id: str) -> str | None:
        known = self._owners.get(network_id)
        if known is not None:
            return known
        network = self.full(network_id)
        return network.project_id if network is not None else None


class Target(Mapping[str, Any]):
    """A resource as the policy sees it: its API attributes, plus its network's owner, `shared` and
    `router:external` (Neutron's `%(network:project_id)s` and field checks), looked up only when a rule asks."""

    def __init__(self, data: Mapping[str, Any], networks: Networks) -> None:
        self.data = data
        self.networks = networks

    def __getitem__(self, key: str) -> Any:
        if key in self.data:
            return self.data[key]
        network_id = self.data.get("network_id")
        if isinstance(network_id, str):
            if key in ("network:project_id", "network:tenant_id"):
                owner = self.networks.owner(network_id)
                if owner is not None:
                    return owner
            elif key in ("shared", "router:external"):
                network = self.networks.full(network_id)
                if network is not None:
                    return network.shared if key == "shared" else network.router_external
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class NetworkTarget(Mapping[str, Any]):
    """A network known only by id: its owner from what is remembered, the rest read when a rule asks."""

    def __init__(self, network_id: str, networks: Networks) -> None:
        self.network_id = network_id
        self.networks = networks

    def __getitem__(self, key: str) -> Any:
        if key == "id":
            return self.network_id
        if key in ("project_id", "tenant_id"):
            owner = self.networks.owner(self.network_id)
            if owner is not None:
                return owner
            raise KeyError(key)
        network = self.networks.full(self.network_id)
        if network is None:
            raise KeyError(key)
        return network.to_api()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("id", "project_id"))

    def __len__(self) -> int:
        return 2


class Authz:
    """The policy, and the registry reads it needs (through `read`, off the event loop)."""

    def __init__(self, policy: Policy, registry: Any, read: Read) -> None:
        self.policy = policy
        self.registry = registry
        self._read = read
        self._owners: dict[str, str] = {}
        self._view_rules: dict[str, list[tuple[str, str]]] = {}
        for name in policy.texts:
            action, sep, attr = name.partition(":")
            if sep and action.startswith("get_"):
                self._view_rules.setdefault(action[4:], []).append((attr, name))

    @staticmethod
    def enforcing(ctx: RequestContext) -> bool:
        return ctx.creds is not None

    @staticmethod
    def _creds(ctx: RequestContext) -> Mapping[str, Any]:
        """The caller's credentials, where the caller already returned for noauth (creds None)."""
        assert ctx.creds is not None
        return ctx.creds

    async def _settle(self, networks: Networks, step: Callable[[], T], hint: Iterable[str] = ()) -> T:
        """Run the pure `step` until it stops asking for networks; the first read also takes `hint` (a list's
        network ids), so a whole page costs one registry call."""
        wanted = {i for i in hint if not networks.known(i)}
        for _ in range(MAX_ROUNDS):
            try:
                return step()
            except NeedNetworks as need:
                ids = sorted(i for i in need.network_ids | wanted if not networks.known(i))
                wanted = set()
                if not ids:
                    raise RuntimeError("policy evaluation asked for networks it already has") from None
                found = {n.id: n for n in await self._read(self.registry.list_networks, {"id": ids})}
                for network_id in ids:
                    networks.add(network_id, found.get(network_id))
        raise RuntimeError("policy evaluation kept asking for networks")

    # reads
    async def visible(self, ctx: RequestContext, member: str, items: list[dict]) -> list[dict]:
        """A list as the caller may see it: the items they may get, each without the attributes they may not."""
        if ctx.creds is None:
            return items
        networks = Networks(self._owners)
        rule = f"get_{member}"
        creds = ctx.creds

        def step() -> list[dict]:
            return [self._strip(ctx, member, item, networks) for item in items
                    if self.policy.check(rule, Target(item, networks), creds)]

        hint = {i["network_id"] for i in items if isinstance(i.get("network_id"), str)}
        return await self._settle(networks, step, hint)

    async def show(self, ctx: RequestContext, member: str, item: dict) -> dict:
        """One resource, or its NotFound when the caller may not get it."""
        if ctx.creds is None:
            return item
        networks = Networks(self._owners)

        def step() -> dict:
            if not self.policy.check(f"get_{member}", Target(item, networks), self._creds(ctx)):
                raise NOT_FOUND[member](str(item.get("id", "")))
            return self._strip(ctx, member, item, networks)

        return await self._settle(networks, step)

    async def view(self, ctx: RequestContext, member: str, item: dict) -> dict:
        """A create/update answer without the attributes the caller may not see."""
        if ctx.creds is None:
            return item
        networks = Networks(self._owners)
        return await self._settle(networks, lambda: self._strip(ctx, member, item, networks))

    def _strip(self, ctx: RequestContext, member: str, item: dict, networks: Networks) -> dict:
        rules = self._view_rules.get(member)
        if not rules:
            return item
        target = Target(item, networks)
        creds = self._creds(ctx)
        hidden = [attr for attr, name in rules if attr in item and not self.policy.check(name, target, creds)]
        return {k: v for k, v in item.items() if k not in hidden} if hidden else item

    # writes
    async def check_create(self, ctx: RequestContext, member: str, items: list[dict]) -> None:
        """Before a (bulk) create: project, network ownership, then create_<member> and its attribute rules."""
        if ctx.creds is None:
            return
        networks = Networks(self._owners)
        privileged = ctx.is_admin or ctx.is_service
        for attrs in items:
            project = attrs.get("project_id", attrs.get("tenant_id"))
            if project is not None and project != ctx.project_id and not privileged:
                raise errors.HTTPBadRequest(msg=PROJECT_MESSAGE)
        hint = {a["network_id"] for a in items if isinstance(a.get("network_id"), str)}

        def step() -> None:
            for attrs in items:
                target = Target(attrs, networks)
                if member in ("port", "subnet") and not privileged and isinstance(attrs.get("network_id"), str):
                    self._check_network_ownership(ctx, target, networks)
                self._enforce(ctx, match_rule(f"create_{member}", member, attrs), target)

        await self._settle(networks, step, hint if member in ("port", "subnet") else ())

    def _check_network_ownership(self, ctx: RequestContext, target: Target, networks: Networks) -> None:
        """Neutron: a port or subnet goes on a network the caller can see (else NetworkNotFound) and owns, unless
        it is shared (else a 404 that does not say the network exists)."""
        network_id = target.data["network_id"]
        owner = networks.owner(network_id)
        if owner is None or not self.policy.check("get_network", NetworkTarget(network_id, networks),
                                                  self._creds(ctx)):
            raise errors.NetworkNotFound(net_id=network_id)
        if owner != target.data.get("project_id", ctx.project_id):
            network = networks.full(network_id)
            if network is None or not network.shared:
                raise errors.HTTPNotFound()

    async def check_update(self, ctx: RequestContext, member: str, current: dict, attrs: Mapping[str, Any]) -> None:
        if ctx.creds is None:
            return
        networks = Networks(self._owners)
        rule = match_rule(f"update_{member}", member, attrs, updating=True)
        await self._settle(networks, lambda: self._enforce_or_hide(ctx, member, current, rule,
                                                                   Target({**current, **attrs}, networks)))

    async def check_delete(self, ctx: RequestContext, member: str, current: dict) -> None:
        if ctx.creds is None:
            return
        networks = Networks(self._owners)
        rule = match_rule(f"delete_{member}", member, {})
        await self._settle(networks, lambda: self._enforce_or_hide(ctx, member, current, rule,
                                                                   Target(current, networks)))

    async def check_action(self, ctx: RequestContext, action: str, member: str, current: dict) -> None:
        """A member action (add_router_interface): the resource must be visible, then the action allowed."""
        if ctx.creds is None:
            return
        networks = Networks(self._owners)

        def step() -> None:
            if not self.policy.check(f"get_{member}", Target(current, networks), self._creds(ctx)):
                raise NOT_FOUND[member](str(current.get("id", "")))
            self._enforce(ctx, match_rule(action, member, {}), Target(current, networks))

        await self._settle(networks, step)

    def check_rule(self, ctx: RequestContext, rule: str) -> None:
        """A rule with no resource behind it (provnet's own API): 403 when the caller fails it."""
        if ctx.creds is not None and not self.policy.check(rule, {}, ctx.creds):
            raise errors.PolicyNotAuthorized(action=f"rule:{rule}")

    def _enforce(self, ctx: RequestContext, rule: MatchRule, target: Target) -> None:
        if not all(self.policy.check(name, target, self._creds(ctx)) for name in rule.rules):
            raise errors.PolicyNotAuthorized(action=rule.text)

    def _enforce_or_hide(self, ctx: RequestContext, member: str, current: dict, rule: MatchRule,
                         target: Target) -> None:
        """Neutron's update/delete: a refusal on something the caller cannot even see is its NotFound."""
        if all(self.policy.check(name, target, self._creds(ctx)) for name in rule.rules):
            return
        if not self.policy.check(f"get_{member}", Target(current, target.networks), self._creds(ctx)):
            raise NOT_FOUND[member](str(current.get("id", "")))
        raise errors.PolicyNotAuthorized(action=rule.text)
