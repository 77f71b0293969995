"""API keys: which requests need one, and checking the one presented in constant time.

One checker for every protocol the service speaks: the HTTP middleware passes it the
``Authorization`` header, other front doors pass it theirs (gRPC: the ``authorization`` metadata).
Keys are kept only as SHA-256 digests and never appear in logs or error messages.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from app.errors import Forbidden, Unauthorized
from app.policy import Access

SCHEME = "Bearer"
CHALLENGE = {"WWW-Authenticate": f'{SCHEME} realm="denoise"'}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _matches(digest: bytes, accepted: tuple[bytes, ...]) -> bool:
    # Compare against every key, without stopping early, so timing tells nothing.
    matched = False
    for candidate in accepted:
        matched |= hmac.compare_digest(digest, candidate)
    return matched


class ApiKeys:
    """The accepted keys (empty: access control is off) and the admin keys (empty: admin routes are refused)."""

    def __init__(self, keys: Iterable[str], *, protect_metrics: bool = False, admin: Iterable[str] = ()) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        self._admin = tuple(_digest(key) for key in admin)
        self.protect_metrics = protect_metrics

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def accepts_any(self, access: Access) -> bool:
        """Whether some key is accepted for ``access`` (so that the API's description asks for one)."""
        return self.required(access) and bool(self._admin if access == "admin" else self._digests)

    def required(self, access: Access) -> bool:
        """Whether a request to a route with this access policy must present a key."""
        if access == "admin":
            return True
        if not self._digests or access == "public":
            return False
        return access == "key" or self.protect_metrics

    def check(self, authorization: str | None, access: Access = "key") -> None:
        """Raise :class:`Unauthorized` unless ``authorization`` is ``Bearer <an accepted key>`` (an admin key
        for ``admin`` access: :class:`Forbidden` when none is set, or for another accepted key)."""
        if access == "admin" and not self._admin:
            raise Forbidden("loading and unloading models is off: no admin key is set (DENOISE_ADMIN_API_KEYS)")
        if not authorization:
            raise Unauthorized(f"missing API key; send the header 'Authorization: {SCHEME} <key>'", headers=CHALLENGE)
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != SCHEME.lower() or not presented.strip():
            raise Unauthorized(
                f"the Authorization header must read '{SCHEME} <key>' (another scheme or no key was sent)",
                headers=CHALLENGE,
            )
        digest = _digest(presented.strip())
        if access == "admin":
            if _matches(digest, self._admin):
                return
            if _matches(digest, self._digests):
                raise Forbidden("this key may not load or unload models; an admin key (DENOISE_ADMIN_API_KEYS) may")
            raise Unauthorized("invalid admin key", headers=CHALLENGE)
        if not _matches(digest, self._digests):
            raise Unauthorized("invalid API key", headers=CHALLENGE)
