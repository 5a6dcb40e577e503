# Neutron's policy applied to the networking API: what the handlers call before and after the registry.
"""The handlers call one method per step (`visible`, `view`, `check_create`, `check_update`, `check_delete`,
`check_action`); each does what Neutron's API layer (neutron/api/v2/base.py) does at that step:

- a resource the caller may not `get_<member>` is, to them, not there: its NotFound (404), never a 403;
- a create or update is checked against `<action>` AND `<action>:<attr>` for every policed attribute the body sets
  (Neutron's match rule); a failure is 403 PolicyNotAuthorized with Neutron's message;
- a port or subnet on someone else's (unshared) network is a 404; a `project_id` other than the caller's is a 400
  unless the caller is admin or a service;
- a response loses the attributes whose `get_<member>:<attr>` rule the caller fails (provider:*, binding:*).

Without authentication (noauth) every caller is an admin and none of this runs.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from provnet.api.middleware import RequestContext
from provnet.identity.neutron_policy import match_rule
from provnet.identity.policy import Policy
from provnet.model import errors
from provnet.model.resources import Network

NOT_FOUND: dict[str, Callable[[str], errors.NeutronError]] = {
    "network": lambda i: errors.NetworkNotFound(net_id=i),
    "subnet": lambda i: errors.SubnetNotFound(subnet_id=i),
    "port": lambda i: errors.PortNotFound(port_id=i),
    "router": lambda i: errors.RouterNotFound(router_id=i),
    "agent": lambda i: errors.AgentNotFound(id=i),
}
PROJECT_MESSAGE = ("Specifying 'project_id' other than the authenticated project in request is not allowed for the "
                   "current user.")


class Target(Mapping[str, Any]):
    """A resource as the policy sees it: its API attributes, plus its network's owner, `shared` and
    `router:external` (Neutron's `%(network:project_id)s` and field checks), looked up only when a rule asks."""

    def __init__(self, data: Mapping[str, Any], network_of: Callable[[str], Network | None]) -> None:
        self.data = data
        self._network_of = network_of

    def _network(self) -> Network | None:
        network_id = self.data.get("network_id")
        return self._network_of(network_id) if isinstance(network_id, str) else None

    def __getitem__(self, key: str) -> Any:
        if key in self.data:
            return self.data[key]
        if key in ("network:project_id", "network:tenant_id", "shared", "router:external"):
            network = self._network()
            if network is not None:
                return {"shared": network.shared, "router:external": network.router_external}.get(
                    key, network.project_id)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Authz:
    """The policy and the registry lookups it needs (networks by id, fetched once per request)."""

    def __init__(self, policy: Policy, registry: Any) -> None:
        self.policy = policy
        self.registry = registry
        self._view_rules: dict[str, list[tuple[str, str]]] = {}
        for name in policy.texts:
            action, sep, attr = name.partition(":")
            if sep and action.startswith("get_"):
                self._view_rules.setdefault(action[4:], []).append((attr, name))

    @staticmethod
    def enforcing(ctx: RequestContext) -> bool:
        return ctx.creds is not None

    def _networks(self) -> Callable[[str], Network | None]:
        cache: dict[str, Network | None] = {}

        def network_of(network_id: str) -> Network | None:
            if network_id not in cache:
                try:
                    cache[network_id] = self.registry.get_network(network_id)
                except errors.NotFound:
                    cache[network_id] = None
            return cache[network_id]

        return network_of

    # reads
    def visible(self, ctx: RequestContext, member: str, items: list[dict]) -> list[dict]:
        """A list as the caller may see it: the items they may get, each without the attributes they may not."""
        if ctx.creds is None:
            return items
        network_of = self._networks()
        rule = f"get_{member}"
        return [self._strip(ctx, member, item, network_of) for item in items
                if self.policy.check(rule, Target(item, network_of), ctx.creds)]

    def show(self, ctx: RequestContext, member: str, item: dict) -> dict:
        """One resource, or its NotFound when the caller may not get it."""
        if ctx.creds is None:
            return item
        network_of = self._networks()
        if not self.policy.check(f"get_{member}", Target(item, network_of), ctx.creds):
            raise NOT_FOUND[member](str(item.get("id", "")))
        return self._strip(ctx, member, item, network_of)

    def view(self, ctx: RequestContext, member: str, item: dict) -> dict:
        """A create/update answer without the attributes the caller may not see."""
        if ctx.creds is None:
            return item
        return self._strip(ctx, member, item, self._networks())

    def _strip(self, ctx: RequestContext, member: str, item: dict, network_of) -> dict:
        rules = self._view_rules.get(member)
        if not rules:
            return item
        target = Target(item, network_of)
        hidden = [attr for attr, name in rules if attr in item and not self.policy.check(name, target, ctx.creds)]
        return {k: v for k, v in item.items() if k not in hidden} if hidden else item

    # writes
    def check_create(self, ctx: RequestContext, member: str, items: list[dict]) -> None:
        """Before a (bulk) create: project, network ownership, then create_<member> and its attribute rules."""
        if ctx.creds is None:
            return
        network_of = self._networks()
        privileged = ctx.is_admin or ctx.is_service
        for attrs in items:
            project = attrs.get("project_id", attrs.get("tenant_id"))
            if project is not None and project != ctx.project_id and not privileged:
                raise errors.HTTPBadRequest(msg=PROJECT_MESSAGE)
            target = Target(attrs, network_of)
            if member in ("port", "subnet") and not privileged and isinstance(attrs.get("network_id"), str):
                self._check_network_ownership(ctx, target, network_of)
            self._enforce(ctx, match_rule(f"create_{member}", member, attrs), target)

    def _check_network_ownership(self, ctx: RequestContext, target: Target, network_of) -> None:
        """Neutron: a port or subnet goes on a network the caller can see (else NetworkNotFound) and owns, unless
        it is shared (else a 404 that does not say the network exists)."""
        network_id = target.data["network_id"]
        network = network_of(network_id)
        if network is None or not self.policy.check("get_network", Target(network.to_api(), network_of),
                                                     ctx.creds):
            raise errors.NetworkNotFound(net_id=network_id)
        if not network.shared and network.project_id != target.data.get("project_id", ctx.project_id):
            raise errors.HTTPNotFound()

    def check_update(self, ctx: RequestContext, member: str, current: dict, attrs: Mapping[str, Any]) -> None:
        if ctx.creds is None:
            return
        target = Target({**current, **attrs}, self._networks())
        self._enforce_or_hide(ctx, member, current, match_rule(f"update_{member}", member, attrs, updating=True),
                              target)

    def check_delete(self, ctx: RequestContext, member: str, current: dict) -> None:
        if ctx.creds is None:
            return
        target = Target(current, self._networks())
        self._enforce_or_hide(ctx, member, current, match_rule(f"delete_{member}", member, {}), target)

    def check_action(self, ctx: RequestContext, action: str, member: str, current: dict) -> None:
        """A member action (add_router_interface): the resource must be visible, then the action allowed."""
        if ctx.creds is None:
            return
        network_of = self._networks()
        if not self.policy.check(f"get_{member}", Target(current, network_of), ctx.creds):
            raise NOT_FOUND[member](str(current.get("id", "")))
        self._enforce(ctx, match_rule(action, member, {}), Target(current, network_of))

    def check_rule(self, ctx: RequestContext, rule: str) -> None:
        """A rule with no resource behind it (provnet's own API): 403 when the caller fails it."""
        if ctx.creds is not None and not self.policy.check(rule, {}, ctx.creds):
            raise errors.PolicyNotAuthorized(action=f"rule:{rule}")

    def _enforce(self, ctx: RequestContext, rule, target: Target) -> None:
        if not all(self.policy.check(name, target, ctx.creds) for name in rule.rules):
            raise errors.PolicyNotAuthorized(action=rule.text)

    def _enforce_or_hide(self, ctx: RequestContext, member: str, current: dict, rule, target: Target) -> None:
        """Neutron's update/delete: a refusal on something the caller cannot even see is its NotFound."""
        if all(self.policy.check(name, target, ctx.creds) for name in rule.rules):
            return
        if not self.policy.check(f"get_{member}", Target(current, target._network_of), ctx.creds):
            raise NOT_FOUND[member](str(current.get("id", "")))
        raise errors.PolicyNotAuthorized(action=rule.text)
