# Keystone token validation for the API: a pure cache (valid until expiry, at most a TTL; rejections briefly) and
# the I/O shell that asks Keystone (GET /v3/auth/tokens with provnet's own service token) off the event loop.
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keystoneauth1 import exceptions as ksa
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import generic

log = logging.getLogger("provnet.identity")

MAX_TOKEN_LENGTH = 8192  # Fernet tokens are ~200 bytes; anything this long is not a token
MAX_PENDING = 256  # validations waiting for Keystone at once; beyond that a request gets 503, not a queue slot
BACKOFF = 1.0  # seconds after Keystone failed during which queued validations fail at once instead of piling on


class InvalidToken(Exception):
    """Keystone says the token is not valid (unknown, expired, revoked) or it is not a token at all."""


class KeystoneUnavailable(Exception):
    """Keystone could not be asked: unreachable, too slow, failing, or provnet's own service user is refused.
    The message names Keystone's URL and never a secret."""


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to, as the policy sees it (roles lower-case, implied roles included by Keystone)."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: frozenset[str]
    expires_at: float  # seconds since the epoch
    creds: dict[str, Any] = field(compare=False, hash=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.creds.update({"user_id": self.user_id, "project_id": self.project_id, "tenant_id": self.project_id,
                           "roles": self.roles})

    @classmethod
    def from_keystone(cls, body: dict) -> Identity:
        """The body of `GET /v3/auth/tokens` -> Identity; ValueError if it is not one."""
        try:
            token = body["token"]
            user = token["user"]
            project = token.get("project") or {}
            roles = frozenset(str(r["name"]).lower() for r in token.get("roles") or ())
            expires = _parse_time(token["expires_at"])
            return cls(str(user["id"]), str(user.get("name", "")), str(project.get("id", "")),
                       str(project.get("name", "")), roles, expires)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a Keystone token document ({type(exc).__name__}: {exc})") from None


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def token_key(token: str) -> bytes:
    """Cache key: a digest, so the cache never holds a usable token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


_REJECTED = object()


class TokenCache:
    """Pure: token digest -> Identity until min(expiry, now + ttl); rejections for `negative_ttl`. Bounded (the
    oldest entry goes first). `now` is a monotonic clock, `wall` the epoch clock the expiry is in."""

    def __init__(self, ttl: float, negative_ttl: float, max_entries: int = 50_000) -> None:
        self.ttl, self.negative_ttl, self.max_entries = ttl, negative_ttl, max_entries
        self._entries: OrderedDict[bytes, tuple[object, float]] = OrderedDict()

    def lookup(self, key: bytes, now: float) -> Identity | bool | None:
        """The Identity, False for a remembered rejection, None when nothing (fresh) is known."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, until = entry
        if now >= until:
            del self._entries[key]
            return None
        return False if value is _REJECTED else value  # type: ignore[return-value]

    def remember(self, key: bytes, identity: Identity, now: float, wall: float) -> None:
        lifetime = min(self.ttl, identity.expires_at - wall)
        if lifetime > 0:
            self._put(key, identity, now + lifetime)

    def reject(self, key: bytes, now: float) -> None:
        if self.negative_ttl > 0:
            self._put(key, _REJECTED, now + self.negative_ttl)

    def _put(self, key: bytes, value: object, until: float) -> None:
        self._entries[key] = (value, until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class KeystoneSettings:
    """Neutron's [keystone_authtoken] options that provnet uses."""

    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    www_authenticate_uri: str = ""
    cafile: str = ""
    insecure: bool = False
    token_cache_time: float = 300.0
    negative_cache_time: float = 10.0
    timeout: float = 5.0

    @property
    def identity_v3(self) -> str:
        """Keystone's v3 root from auth_url (with or without /v3)."""
        url = self.auth_url.rstrip("/")
        return url if url.endswith("/v3") else f"{url}/v3"

    @property
    def public_uri(self) -> str:
        """What a 401 tells clients to authenticate against (WWW-Authenticate: Keystone uri=...)."""
        return (self.www_authenticate_uri or self.auth_url).rstrip("/")


class KeystoneValidator:
    """Validates tokens against Keystone with provnet's own service token; never blocks the event loop.

    Concurrent requests with the same unknown token share one Keystone call. Keystone's answers: 200 -> the token's
    Identity, cached until its expiry and at most token_cache_time; 404 -> invalid, remembered for
    negative_cache_time; anything else (unreachable, timeout, 5xx, our own credentials refused) ->
    KeystoneUnavailable, never cached and never a pass.
    """

    def __init__(self, settings: KeystoneSettings, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, session: Any = None, workers: int = 4) -> None:
        self.settings = settings
        self.cache = TokenCache(settings.token_cache_time, settings.negative_cache_time)
        self.clock, self.wall = clock, wall
        self._session = session if session is not None else _service_session(settings)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="provnet-keystone")
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._url = f"{settings.identity_v3}/auth/tokens?nocatalog"
        self._down_until = 0.0
        self._down_reason = ""

    async def identify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
            raise InvalidToken("not a token")
        key = token_key(token)
        known = self.cache.lookup(key, self.clock())
        if isinstance(known, Identity):
            return known
        if known is False:
            raise InvalidToken("rejected by Keystone (remembered)")
        pending = self._inflight.get(key)
        if pending is None:
            if len(self._inflight) >= MAX_PENDING:
                raise KeystoneUnavailable(f"too many token validations waiting for Keystone at "
                                          f"{self.settings.identity_v3}")
            pending = asyncio.get_running_loop().run_in_executor(self._pool, self._ask_keystone, token)
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        identity = await asyncio.shield(pending)
        if identity is None:
            self.cache.reject(key, self.clock())
            raise InvalidToken("rejected by Keystone")
        self.cache.remember(key, identity, self.clock(), self.wall())
        return identity

    def _ask_keystone(self, token: str) -> Identity | None:
        """Blocking (a worker thread): Keystone's verdict on `token`. When Keystone just failed, the validations
        queued behind that failure fail at once for BACKOFF seconds (a hung Keystone would otherwise make each of
        them wait a whole timeout in turn); the first one after that asks again."""
        if self.clock() < self._down_until:
            raise KeystoneUnavailable(self._down_reason)
        try:
            return self._validate(token)
        except KeystoneUnavailable as exc:
            self._down_until, self._down_reason = self.clock() + BACKOFF, str(exc)
            raise

    def _validate(self, token: str) -> Identity | None:
        where = self.settings.identity_v3
        for attempt in (1, 2):
            try:
                response = self._session.get(self._url, headers={"X-Subject-Token": token}, authenticated=True,
                                             raise_exc=False, timeout=self.settings.timeout)
            except ksa.Unauthorized:
                raise KeystoneUnavailable(f"Keystone at {where} refused provnet's service user: check "
                                          "[keystone_authtoken] username, password, project_name and domains") \
                    from None
            except ksa.ClientException as exc:
                raise KeystoneUnavailable(f"Keystone at {where} is unreachable: {_reason(exc)}") from None
            status = response.status_code
            if status == 200:
                try:
                    return Identity.from_keystone(response.json())
                except ValueError as exc:
                    raise KeystoneUnavailable(f"Keystone at {where} answered with {exc}") from None
            if status == 404:
                return None
            if status == 401 and attempt == 1:  # our own token expired or was revoked: get a new one, ask again
                self._session.invalidate()
                continue
            if status in (401, 403):
                raise KeystoneUnavailable(f"Keystone at {where} does not let provnet's service user validate tokens "
                                          f"(HTTP {status}): give it the service or admin role")
            raise KeystoneUnavailable(f"Keystone at {where} answered HTTP {status} to a token validation")
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _service_session(settings: KeystoneSettings):
    """A keystoneauth1 session authenticated as provnet's service user (password plugin, version discovery)."""
    auth = generic.Password(auth_url=settings.auth_url, username=settings.username, password=settings.password,
                            project_name=settings.project_name, user_domain_name=settings.user_domain_name,
                            project_domain_name=settings.project_domain_name)
    verify: bool | str = False if settings.insecure else (settings.cafile or True)
    return ks_session.Session(auth=auth, verify=verify, timeout=settings.timeout)
