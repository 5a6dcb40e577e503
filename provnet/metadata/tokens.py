# IMDSv2 session tokens (pure): stateless HMACs over (instance, port, MAC, address, expiry, key id), so any metadata
# API replica that holds the key checks them without shared state, and a token taken from one VM fails on another.
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADERS = ("x-aws-ec2-metadata-token", "x-metadata-token")  # AWS's, and Firecracker MMDS's
TTL_HEADERS = ("x-aws-ec2-metadata-token-ttl-seconds", "x-metadata-token-ttl-seconds")
TTL_MIN, TTL_MAX = 1, 21600
MAX_TOKEN = 256  # longer is malformed without further work
# between provnet's own hops (the proxy drops any a guest sends): the API asks the proxy to send the token's answer
# with this IP TTL; the proxy tells the agent (and the agent the API) which forwarding headers the guest sent
HOP_LIMIT_HEADER = "X-Provnet-Hop-Limit"
RELAYED_HEADER = "X-Provnet-Relayed"
_LABEL = b"provnet imds session token v1"


@dataclass(frozen=True, slots=True)
class Binding:
    """What a token is good for: the instance, its port and that port's MAC (empty when unknown), the source."""

    instance_id: str
    port_id: str
    mac: str
    address: str


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One HMAC key, derived from a shared secret, and its public id (a hash of the key: it reveals nothing)."""

    kid: str
    key: bytes

    @classmethod
    def derive(cls, secret: str) -> TokenKey:
        key = hmac.new(secret.encode("utf-8"), _LABEL, hashlib.sha256).digest()
        return cls(hashlib.sha256(key).hexdigest()[:8], key)


class TokenRefused(Exception):
    """A token that does not open this request; the message is the one-line reason (logged, never sent)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac(key: bytes, kid: str, expires: int, binding: Binding) -> bytes:
    message = "\n".join((kid, str(expires), binding.instance_id, binding.port_id, binding.mac.lower(),
                         binding.address)).encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).digest()


def _address_tag(key: bytes, address: str) -> str:
    """A short keyed tag of the address the token was issued to: tells "replayed from another address" apart."""
    return _b64(hmac.new(key, b"address\n" + address.encode(), hashlib.sha256).digest()[:6])


def parse_ttl(values: Sequence[str]) -> int:
    """The TTL header's seconds (1..21600); ValueError with the message for the 400 otherwise."""
    if not values:
        raise ValueError("X-aws-ec2-metadata-token-ttl-seconds is required (1 to 21600 seconds)")
    if len(values) != 1:
        raise ValueError("X-aws-ec2-metadata-token-ttl-seconds must be given once")
    raw = values[0].strip()
    if not (raw.isascii() and raw.isdigit()) or not TTL_MIN <= int(raw) <= TTL_MAX:
        raise ValueError(f"X-aws-ec2-metadata-token-ttl-seconds must be an integer from {TTL_MIN} to {TTL_MAX}, "
                         f"got {raw[:32]!r}")
    return int(raw)


class TokenKeys:
    """Issues with the current key; accepts the current and the previous ones (zero-downtime rotation)."""

    def __init__(self, current: TokenKey, previous: Sequence[TokenKey] = ()) -> None:
        self.current = current
        self.by_kid = {k.kid: k for k in (*previous, current)}

    @classmethod
    def from_secrets(cls, current: str, previous: Sequence[str] = ()) -> TokenKeys:
        return cls(TokenKey.derive(current), [TokenKey.derive(p) for p in previous if p != current])

    def issue(self, binding: Binding, ttl: int, now: float) -> str:
        key = self.current
        expires = int(now) + ttl
        return ".".join(("1", key.kid, str(expires), _address_tag(key.key, binding.address),
                         _b64(_mac(key.key, key.kid, expires, binding))))

    def check(self, token: str, binding: Binding, now: float) -> None:
        """None if `token` opens requests of `binding` at `now`; TokenRefused with the reason otherwise."""
        parts = token.split(".") if len(token) <= MAX_TOKEN and token.isascii() else []
        if len(parts) != 5 or parts[0] != "1" or not parts[2].isdigit() or len(parts[2]) > 12:
            raise TokenRefused("malformed token")
        _, kid, expires_text, tag, signature = parts
        key = self.by_kid.get(kid)
        if key is None:
            raise TokenRefused(f"token signed with key {kid[:16]!r}, which this API does not hold (rotated out?)")
        expected = _b64(_mac(key.key, kid, int(expires_text), binding))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            if not hmac.compare_digest(_address_tag(key.key, binding.address).encode(), tag.encode()):
                raise TokenRefused(f"token issued to another address, replayed from {binding.address}")
            raise TokenRefused("token issued to another instance, port or MAC")
        if int(expires_text) <= now:
            raise TokenRefused(f"token expired {int(now) - int(expires_text)} s ago")
