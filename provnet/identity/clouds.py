# Client side: a Keystone session from clouds.yaml / OS_* (as the openstack CLI reads them), tokens and endpoints.
"""`--os-cloud NAME` (or OS_CLOUD) names a cloud in clouds.yaml (./clouds.yaml, ~/.config/openstack/, /etc/openstack/;
secure.yaml for its secrets), and `--os-cloud envvars` takes it from OS_AUTH_URL, OS_USERNAME, ... exactly as
openstacksdk does, because it is openstacksdk's reader that does it. Nothing here ever prints a password or a token:
errors name the cloud and Keystone's URL only.
"""
from __future__ import annotations

import logging
import os
import ssl
import threading
from typing import Any

from keystoneauth1 import exceptions as ksa
from openstack import config as os_config
from openstack import exceptions as os_exceptions

from provnet.identity.client import ClientIdentity
from provnet.identity.tls import TlsError, client_context
from provnet.model import errors

log = logging.getLogger("provnet.identity")
CA_HINT = "give the CA bundle that signed it with --os-cacert FILE (or OS_CACERT, or cacert in clouds.yaml)"


class CloudError(ValueError):
    """A cloud that cannot be used as configured (unknown name, missing auth settings, bad CA bundle)."""


class CloudAuth:
    """Tokens and endpoints of one cloud for provnet's clients (RemoteRegistry, NeutronRegistry).

    `token()` returns keystoneauth's cached token and gets a new one shortly before it expires; `invalidate()`
    drops it after a 401. Failures are NeutronErrors: Keystone unreachable -> ServiceUnavailable, credentials
    refused -> NotAuthenticated.
    """

    def __init__(self, name: str | None, cacert: str | None = None) -> None:
        self.name = name or "envvars"
        extra: dict[str, Any] = {"cacert": cacert} if cacert else {}  # (get_one's keyword arguments are typed)
        try:
            self.region = os_config.OpenStackConfig().get_one(cloud=name, **extra)
        except os_exceptions.ConfigException as exc:
            raise CloudError(f"cloud {self.name!r}: {_first_line(exc)}") from None
        except ksa.ClientException as exc:
            raise CloudError(f"cloud {self.name!r}: {_first_line(exc)}") from None
        auth_url = (self.region.config.get("auth") or {}).get("auth_url", "")
        self.auth_url = str(auth_url)
        if not self.auth_url and self.region.config.get("auth_type") not in ("none", "noauth", "admin_token"):
            raise CloudError(f"cloud {self.name!r} has no auth_url: set auth.auth_url in clouds.yaml (or "
                             "OS_AUTH_URL with --os-cloud envvars)")
        verify, cert = self.region.get_requests_verify_args()
        self.cafile = verify if isinstance(verify, str) else ""
        self.insecure = verify is False
        try:
            self.ssl_context: ssl.SSLContext = client_context(self.cafile, self.insecure)
        except TlsError as exc:
            raise CloudError(f"cloud {self.name!r}: {exc}") from None
        if cert:  # a client certificate from clouds.yaml (cert/key)
            certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
            try:
                self.ssl_context.load_cert_chain(certfile, keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise CloudError(f"cloud {self.name!r}: client certificate {certfile}: {exc}") from None
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = self.region.get_session()
            return self._session

    def token(self) -> str:
        try:
            token = self.session.get_token()
        except ksa.Unauthorized:
            raise errors.NotAuthenticated(f"Keystone at {self.auth_url} refused the credentials of cloud "
                                          f"{self.name!r} (HTTP 401)") from None
        except ksa.SSLError as exc:
            raise errors.ServiceUnavailable(f"the certificate of Keystone at {self.auth_url} is not trusted "
                                            f"({_first_line(exc)}): {CA_HINT}") from None
        except ksa.ClientException as exc:
            raise errors.ServiceUnavailable(f"cannot get a token from Keystone at {self.auth_url} for cloud "
                                            f"{self.name!r}: {_first_line(exc)}") from None
        if not token:
            raise errors.NotAuthenticated(f"cloud {self.name!r} gave no token")
        return token

    def invalidate(self) -> None:
        self.session.invalidate()

    def endpoint(self, service_type: str = "network") -> str:
        """The service's endpoint: clouds.yaml's `<service>_endpoint_override`, else the catalog's."""
        override = self.region.get_endpoint(service_type)
        if override:
            return override
        self.token()  # authenticate first, with this module's readable errors
        try:
            url = self.region.get_endpoint_from_catalog(service_type)
        except ksa.ClientException as exc:
            raise errors.ServiceUnavailable(f"cannot read the catalog of cloud {self.name!r}: "
                                            f"{_first_line(exc)}") from None
        if not url:
            interface = self.region.get_interface(service_type)
            raise CloudError(f"cloud {self.name!r} has no {service_type!r} endpoint (interface {interface}) in its "
                             "Keystone catalog")
        return url

    def describe(self) -> str:
        return f"cloud {self.name!r}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def client_identity(os_cloud: str | None, cacert: str | None, has_url: bool,
                    watch_network: str | None = None) -> ClientIdentity | None:
    """What --os-cloud, --os-cacert and --url add up to: None when nothing is remote or special (a local store, or
    --url with neither credentials nor a CA bundle); CloudError for an unusable cloud or CA bundle.

    Credentials come from --os-cloud (OS_CLOUD); with --url also from OS_AUTH_URL... alone (openstacksdk's
    `envvars` cloud). --os-cloud without --url is companion mode."""
    use_env = has_url and not os_cloud and bool(os.environ.get("OS_AUTH_URL"))
    if not os_cloud and not use_env:
        if not (has_url and cacert):
            return None
        try:
            return ClientIdentity(None, client_context(cacert))
        except TlsError as exc:
            raise CloudError(f"--os-cacert: {exc}") from None
    cloud = CloudAuth(os_cloud, cacert)
    return ClientIdentity(cloud, cloud.ssl_context, companion=not has_url, watch_network=watch_network)
