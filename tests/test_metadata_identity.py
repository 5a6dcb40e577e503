# The signed identity document: issued by the metadata API through the agent, verified by independent verifiers
# (joserfc, and PyJWT's JWKS client fetching the networking API's published key set) and refused after expiry,
# with a wrong audience, and after its key is retired; key files that cannot be used are clear errors.
from __future__ import annotations

import json
import time
import urllib.request

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError, InvalidKeyIdError
from joserfc.jwk import KeySet
from metadata_chain import Chain, agent_get, build_seed

from provnet.api.app import ApiService
from provnet.api.metadata_v1 import MetadataSettings
from provnet.config import ConfigError, load_config
from provnet.metadata.api import identity_signer
from provnet.metadata.identity import IdentitySigner, generate_key_file, load_key
from provnet.registry import open_registry


@pytest.fixture
def signed(tmp_path):
    registry = open_registry(f"sqlite:///{tmp_path}/provnet.sqlite")
    seed = build_seed(registry)
    old_path, new_path = str(tmp_path / "old.pem"), str(tmp_path / "new.pem")
    generate_key_file(old_path)
    generate_key_file(new_path)
    signer = IdentitySigner(load_key(old_path), "provnet-test", 600)
    chain = Chain(registry, tmp_path, identity=signer)
    api = ApiService(registry, port=0, metadata=MetadataSettings(old_path, (new_path,)))
    chain.loop.run(api.start())
    yield registry, seed, chain, api, old_path, new_path
    chain.loop.run(api.stop())
    chain.close()
    registry.close()


def via(seed, ip="172.16.1.103"):
    return [("X-Forwarded-For", ip), ("X-Neutron-Router-ID", seed.router_id)]


def fetch_jwks(api) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{api.port}/provnet/v1/metadata/jwks.json", timeout=10) as r:
        assert "max-age" in r.headers["Cache-Control"]
        return json.loads(r.read())


def test_identity_document_verifies_against_the_published_jwks(signed):
    registry, seed, chain, api, old_path, new_path = signed
    for path in ("/latest/dynamic/instance-identity/jwt", "/openstack/latest/identity.jwt"):
        answer = agent_get(chain, f"{path}?audience=https://vault.example", via(seed))
        assert answer.status == 200 and answer.headers["content-type"] == "application/jwt"
        keyset = KeySet.import_key_set(fetch_jwks(api))
        token = jose_jwt.decode(answer.text, keyset, algorithms=["ES256"])
        jose_jwt.JWTClaimsRegistry(aud={"essential": True, "value": "https://vault.example"},
                                   exp={"essential": True}).validate(token.claims)
        claims = token.claims
        assert claims["instance_id"] == seed.instances["vm1"] == claims["sub"]
        assert claims["port_id"] == seed.ports["vm1"] and claims["network_id"] == seed.network_id
        assert claims["fixed_ip"] == "172.16.1.103" and claims["mac_address"]
        assert claims["project_id"] == registry.get_instance(seed.instances["vm1"]).project_id
        assert claims["exp"] - claims["iat"] == 600
        # PyJWT with its JWKS client, as a third party would: the key chosen by kid from the published set
        client = jwt.PyJWKClient(f"http://127.0.0.1:{api.port}/provnet/v1/metadata/jwks.json")
        key = client.get_signing_key_from_jwt(answer.text)
        assert jwt.decode(answer.text, key.key, algorithms=["ES256"], audience="https://vault.example")
        with pytest.raises(jwt.InvalidAudienceError):
            jwt.decode(answer.text, key.key, algorithms=["ES256"], audience="https://other.example")
        with pytest.raises(InvalidClaimError):
            jose_jwt.JWTClaimsRegistry(aud={"essential": True, "value": "https://other"}).validate(claims)
    vm2 = agent_get(chain, "/openstack/latest/identity.jwt?audience=a", via(seed, "172.16.1.104"))
    assert jwt.decode(vm2.text, options={"verify_signature": False})["instance_id"] == seed.instances["vm2"]


def test_expired_and_retired_documents_are_refused(signed):
    registry, seed, chain, api, old_path, new_path = signed
    document = agent_get(chain, "/openstack/latest/identity.jwt?audience=aud", via(seed)).text
    keyset = KeySet.import_key_set(fetch_jwks(api))
    claims = jose_jwt.decode(document, keyset).claims
    with pytest.raises(ExpiredTokenError):
        jose_jwt.JWTClaimsRegistry(now=lambda: claims["exp"] + 1, exp={"essential": True}).validate(claims)
    # a document issued 1,000 s ago (the API's wall clock injected) is expired for PyJWT on the real clock
    chain.api.wall_clock = lambda: time.time() - 1000
    old = agent_get(chain, "/openstack/latest/identity.jwt?audience=aud", via(seed)).text
    chain.api.wall_clock = time.time
    client = jwt.PyJWKClient(f"http://127.0.0.1:{api.port}/provnet/v1/metadata/jwks.json")
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(old, client.get_signing_key_from_jwt(old).key, algorithms=["ES256"], audience="aud")
    # rotation: sign with the new key, publish only it (the old one retired): the old document no longer verifies
    chain.loop.loop.call_soon_threadsafe(setattr, chain.api, "identity", IdentitySigner(load_key(new_path), "p", 600))
    api.metadata = MetadataSettings(new_path, ())
    chain.loop.run(api.stop())
    chain.loop.run(api.start())
    retired = KeySet.import_key_set(fetch_jwks(api))
    assert len(retired.keys) == 1
    with pytest.raises(InvalidKeyIdError):  # its kid is no longer published
        jose_jwt.decode(document, retired)
    fresh = agent_get(chain, "/openstack/latest/identity.jwt?audience=aud", via(seed)).text
    assert jose_jwt.decode(fresh, retired).claims["aud"] == "aud"


@pytest.mark.parametrize("query,status", [("", 400), ("?audience=", 400), ("?audience=a&audience=b", 400),
                                          ("?audience=" + "a" * 300, 400), ("?audience=%00x", 400),
                                          ("?audience=ok", 200)])
def test_audience_is_required_and_checked(signed, query, status):
    _, seed, chain, *_ = signed
    assert agent_get(chain, f"/openstack/latest/identity.jwt{query}", via(seed)).status == status


def test_key_files_that_cannot_be_used(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    config = load_config(files=[], env={}, overrides={"metadata.identity_signing_key": str(bad)})
    with pytest.raises(ConfigError, match="bad.pem"):
        identity_signer(config)
    made = tmp_path / "sub" / "made.pem"
    signer = identity_signer(load_config(files=[], env={}, overrides={"metadata.identity_signing_key": str(made)}))
    assert signer is not None and (made.stat().st_mode & 0o777) == 0o600
    assert identity_signer(load_config(files=[], env={}, overrides={"metadata.identity_signing_key": str(made)})
                           ).key.kid == signer.key.kid  # kept, not made again
    t0 = time.time()
    assert signer.sign({"sub": "x"}, "a", t0)
