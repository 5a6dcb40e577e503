# The instance-id signature the agent adds and the metadata API checks: hex HMAC-SHA256 with the shared secret;
# the API accepts the current and the previous secret, so the secret rotates without a failed request.
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def sign_instance_id(secret: str, instance_id: str) -> str:
    """`X-Instance-ID-Signature`: 64 lowercase hex chars; an empty secret is still a key (as Neutron and Nova)."""
    return hmac.new(secret.encode("utf-8"), instance_id.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_matches(secret: str, instance_id: str, signature: str) -> bool:
    """Constant-time comparison of a received signature with the expected one."""
    expected = sign_instance_id(secret, instance_id)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "surrogateescape"))


class SharedSecrets:
    """metadata_proxy_shared_secret and metadata_proxy_shared_secret_previous, as one value that is swapped whole
    when the configuration is reloaded (SIGHUP): signers use `current`, checkers accept every secret held."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        self.current = current
        self.previous = tuple(p for p in previous if p and p != current)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.current, *self.previous)

    def sign(self, instance_id: str) -> str:
        return sign_instance_id(self.current, instance_id)

    def matches(self, instance_id: str, signature: str) -> bool:
        """True if `signature` is right under any secret held; every one is compared, each in constant time."""
        found = False
        for secret in self.all:
            found |= signature_matches(secret, instance_id, signature)
        return found
