# The instance-id signature the agent adds and the metadata API checks: hex HMAC-SHA256 with the shared secret.
from __future__ import annotations

import hashlib
import hmac


def sign_instance_id(secret: str, instance_id: str) -> str:
    """`X-Instance-ID-Signature`: 64 lowercase hex chars; an empty secret is still a key (as Neutron and Nova)."""
    return hmac.new(secret.encode("utf-8"), instance_id.encode("utf-8"), hashlib.sha256).hexdigest()


def signature_matches(secret: str, instance_id: str, signature: str) -> bool:
    """Constant-time comparison of a received signature with the expected one."""
    expected = sign_instance_id(secret, instance_id)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "surrogateescape"))
