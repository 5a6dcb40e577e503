# Neutron's exception family: each error knows its HTTP status, its Neutron type name and its message.
from __future__ import annotations


class NeutronError(Exception):
    """Base of every error the domain raises; `type` is the name Neutron puts in the error body."""

    status: int = 500
    message_format: str = "An unknown exception occurred."

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.message = message if message is not None else self.message_format % kwargs
        super().__init__(self.message)

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


class BadRequest(NeutronError):
    status = 400
    message_format = "Bad %(resource)s request: %(msg)s."


class HTTPBadRequest(BadRequest):
    """Malformed bodies: unknown attributes, wrong types, missing required attributes."""

    message_format = "%(msg)s"


class ReadOnly(BadRequest):
    """Companion mode reads a cloud through Neutron's API and never changes it."""

    message_format = ("cannot %(what)s: provnet reads this cloud through Neutron's API and never writes to it "
                      "(companion mode); use the cloud's own tools (openstack ...)")


class InvalidInput(BadRequest):
    message_format = "Invalid input for operation: %(error_message)s."


class NotAuthorized(NeutronError):
    status = 403
    message_format = "Not authorized."


class PolicyNotAuthorized(NotAuthorized):
    """oslo.policy's refusal as Neutron answers it; `action` is the rendered check, e.g.
    "(rule:create_port and rule:create_port:binding:host_id)"."""

    message_format = "%(action)s is disallowed by policy"


class NotAuthenticated(NeutronError):
    """401: no token, or one Keystone does not accept (a client-side error; the server answers keystonemiddleware's
    body)."""

    status = 401
    message_format = "The request you have made requires authentication."


class NotFound(NeutronError):
    status = 404
    message_format = "An unknown exception occurred."


class HTTPNotFound(NotFound):
    """Neutron's answer for something the caller may not see (it does not say whether it exists)."""

    message_format = "The resource could not be found."


class Conflict(NeutronError):
    status = 409
    message_format = "An unknown exception occurred."


class InUse(Conflict):
    pass


class ServiceUnavailable(NeutronError):
    status = 503
    message_format = "The service is unavailable."


class NetworkNotFound(NotFound):
    message_format = "Network %(net_id)s could not be found."


class SubnetNotFound(NotFound):
    message_format = "Subnet %(subnet_id)s could not be found."


class PortNotFound(NotFound):
    message_format = "Port %(port_id)s could not be found."


class RouterNotFound(NotFound):
    message_format = "Router %(router_id)s could not be found."


class AgentNotFound(NotFound):
    message_format = "Agent %(id)s could not be found."


class InvalidL3Agent(AgentNotFound):
    message_format = "Agent %(id)s is not a L3 Agent or has been disabled"


class RouterHostedByL3Agent(Conflict):
    message_format = "The router %(router_id)s has been already hosted by the L3 Agent %(agent_id)s."


class RouterNotHostedByL3Agent(Conflict):
    message_format = "The router %(router_id)s is not hosted by L3 agent %(agent_id)s."


class InstanceNotFound(NotFound):
    message_format = "Instance %(instance_id)s could not be found."


class ExtensionNotFound(NotFound):
    message_format = "Extension with alias %(extension_alias)s does not exist."


class ResourceNotFound(NotFound):
    message_format = "The resource could not be found."


class NetworkInUse(InUse):
    message_format = (
        "Unable to complete operation on network %(net_id)s. "
        "There are one or more ports still in use on the network."
    )


class SubnetInUse(InUse):
    message_format = (
        "Unable to complete operation on subnet %(subnet_id)s: "
        "One or more ports have an IP allocation from this subnet."
    )


class RouterInUse(InUse):
    message_format = "Router %(router_id)s %(reason)s"


class FlatNetworkInUse(InUse):
    message_format = "Unable to create the flat network. Physical network %(physical_network)s is in use."


class VlanIdInUse(InUse):
    message_format = (
        "Unable to create the network. The VLAN %(vlan_id)s on physical network "
        "%(physical_network)s is in use."
    )


class MacAddressInUse(InUse):
    message_format = "Unable to complete operation for network %(net_id)s. The mac address %(mac)s is in use."


class IpAddressGenerationFailure(Conflict):
    message_format = "No more IP addresses available on network %(net_id)s."


class IpAddressAlreadyAllocated(Conflict):
    message_format = "IP address %(ip)s already allocated in subnet %(subnet_id)s"


class InvalidAllocationPool(BadRequest):
    message_format = "The allocation pool %(pool)s is not valid."


class OutOfBoundsAllocationPool(BadRequest):
    message_format = "The allocation pool %(pool)s spans beyond the subnet cidr %(subnet_cidr)s."


class OverlappingAllocationPools(Conflict):
    message_format = (
        "Found overlapping allocation pools: %(pool_1)s %(pool_2)s for subnet %(subnet_cidr)s."
    )


class GatewayConflictWithAllocationPools(Conflict):
    message_format = "Gateway ip %(ip_address)s conflicts with allocation pool %(pool)s."


class RouterInterfaceNotFoundForSubnet(NotFound):
    message_format = "Router %(router_id)s has no interface on subnet %(subnet_id)s"


class PortSecurityPortHasSecurityGroup(InUse):
    message_format = "Port has security group associated. Cannot disable port security or ip address until security group is removed"  # noqa: E501


class AddressPairAndPortSecurityRequired(Conflict):
    message_format = "Port Security must be enabled in order to have allowed address pairs on a port."


class PortInUse(InUse):
    message_format = ("Unable to complete operation on port %(port_id)s for network %(net_id)s. "
                      "Port already has an attached device %(device_id)s.")


class ServicePortInUse(InUse):
    message_format = "Port %(port_id)s cannot be deleted directly via the port API: %(reason)s."


class RouterInterfaceNotFound(NotFound):
    message_format = "Router %(router_id)s does not have an interface with id %(port_id)s"


class InstanceExists(Conflict):
    message_format = "Instance %(instance_id)s already exists."


class InvalidIpForSubnet(BadRequest):
    message_format = "IP address %(ip_address)s is not a valid IP for the specified subnet."


class InvalidIpForNetwork(BadRequest):
    message_format = "IP address %(ip_address)s is not a valid IP for any of the subnets on the specified network."


class DNSNameServersExhausted(BadRequest):
    message_format = ("Unable to complete operation for %(subnet_id)s. "
                      "The number of DNS nameservers exceeds the limit %(quota)s.")


class HostRoutesExhausted(BadRequest):
    message_format = ("Unable to complete operation for %(subnet_id)s. "
                      "The number of host routes exceeds the limit %(quota)s.")


class TunnelIdInUse(Conflict):
    message_format = "Unable to create the network. The tunnel ID %(tunnel_id)s is in use."


class NoNetworkAvailable(ServiceUnavailable):
    message_format = "Unable to create the network. No tenant network is available for allocation."


class MacAddressGenerationFailure(ServiceUnavailable):
    message_format = "Unable to generate unique mac on network %(net_id)s."


class RevisionNumberConstraintFailed(NeutronError):
    """An update's `If-Match: revision_number=N` did not hold: someone changed the resource since it was read."""

    status = 412
    message_format = "Constrained to %(expected)s, but current revision is %(current)s"
