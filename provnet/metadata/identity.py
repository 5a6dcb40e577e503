# Signed identity documents: a JWT (ES256, PyJWT) a guest hands to a third party, which checks it against the JWKS
# the networking API publishes; keys are PEM files, identified by their RFC 7638 thumbprint, rotated with overlap.
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

ALGORITHM = "ES256"
MAX_AUDIENCE = 256


class IdentityKeyError(ValueError):
    """A key file that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class IdentityKey:
    kid: str
    public: ec.EllipticCurvePublicKey
    private: ec.EllipticCurvePrivateKey | None = None
    path: str = ""

    def jwk(self) -> dict[str, Any]:
        out = jwt.algorithms.ECAlgorithm.to_jwk(self.public, as_dict=True)
        out.update({"kid": self.kid, "use": "sig", "alg": ALGORITHM})
        return out


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of a P-256 public key: a key id every party can recompute."""
    numbers = public.public_numbers()
    members = {"crv": "P-256", "kty": "EC", "x": _b64(numbers.x.to_bytes(32, "big")),
               "y": _b64(numbers.y.to_bytes(32, "big"))}
    return _b64(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest())


def load_key(path: str) -> IdentityKey:
    """A P-256 key from a PEM file (private or public); IdentityKeyError saying why it cannot be used."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise IdentityKeyError(f"identity key {path}: {exc.strerror}") from None
    private = None
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public = private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise IdentityKeyError(f"identity key {path}: not a PEM key without a passphrase ({exc})") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise IdentityKeyError(f"identity key {path}: must be an EC P-256 key (openssl genpkey -algorithm EC "
                        "-pkeyopt ec_paramgen_curve:P-256)")
    # an EC P-256 public key (checked above) comes from an EC P-256 private key
    ec_private = private if isinstance(private, ec.EllipticCurvePrivateKey) else None
    return IdentityKey(thumbprint(public), public, ec_private, path)


def generate_key_file(path: str) -> None:
    """A new P-256 private key at `path` (0600), unless one is there already (several processes may race)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temp, path)  # atomic, and never replaces a key another process made first
        except FileExistsError:
            pass
    finally:
        os.unlink(temp)


def signing_key(path: str, create: bool = True) -> IdentityKey:
    """The key the metadata API signs with (created when missing and `create`)."""
    if create and not os.path.exists(path):
        try:
            generate_key_file(path)
        except OSError as exc:
            raise IdentityKeyError(f"identity key {path}: cannot create it: {exc.strerror}") from None
        log.debug("created the identity signing key %s", path)  # the metadata API's start line names the key
    key = load_key(path)
    if key.private is None:
        raise IdentityKeyError(f"identity key {path}: identity_signing_key must be a private key")
    return key


def published_keys(signing_path: str, verify_paths: Iterable[str]) -> list[IdentityKey]:
    """What the JWKS holds: the signing key's public half (when the file is there) and every verify key."""
    keys: dict[str, IdentityKey] = {}
    if signing_path and os.path.exists(signing_path):
        key = load_key(signing_path)
        keys[key.kid] = key
    for path in verify_paths:
        key = load_key(path)
        keys.setdefault(key.kid, key)
    return list(keys.values())


def jwks(keys: Iterable[IdentityKey]) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def check_audience(values: list[str]) -> str:
    """The `audience` query parameter: once, 1..256 printable ASCII characters; ValueError for the 400."""
    if len(values) != 1 or not values[0]:
        raise ValueError("the identity document needs ?audience=<who will verify it> (once)")
    audience = values[0]
    if len(audience) > MAX_AUDIENCE or not audience.isascii() or not audience.isprintable():
        raise ValueError(f"audience must be 1 to {MAX_AUDIENCE} printable ASCII characters")
    return audience


class IdentitySigner:
    """Signs identity documents with one key; swapped whole on reload."""

    def __init__(self, key: IdentityKey, issuer: str, ttl: int) -> None:
        assert key.private is not None
        self.key = key
        self._private = key.private
        self.issuer = issuer
        self.ttl = ttl

    def sign(self, claims: Mapping[str, Any], audience: str, now: float) -> str:
        issued = int(now)
        payload = {"iss": self.issuer, "aud": audience, "iat": issued, "nbf": issued, "exp": issued + self.ttl,
                   **claims}
        return jwt.encode(payload, self._private, algorithm=ALGORITHM, headers={"kid": self.key.kid})
