"""API keys: which requests need one, and checking the one presented in constant time.

One checker for every protocol the service speaks: the HTTP middleware passes it the
``Authorization`` header, other front doors pass it theirs (gRPC: the ``authorization`` metadata).
Keys are kept only as SHA-256 digests and never appear in logs or error messages.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from app.errors import Unauthorized
from app.policy import Access

SCHEME = "Bearer"
CHALLENGE = {"WWW-Authenticate": f'{SCHEME} realm="denoise"'}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys; empty means access control is off."""

    def __init__(self, keys: Iterable[str], *, protect_metrics: bool = False) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        self.protect_metrics = protect_metrics

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def required(self, access: Access) -> bool:
        """Whether a request to a route with this access policy must present a key."""
        if not self._digests or access == "public":
            return False
        return access == "key" or self.protect_metrics

    def check(self, authorization: str | None) -> None:
        """Raise :class:`Unauthorized` unless ``authorization`` is ``Bearer <an accepted key>``."""
        if not authorization:
            raise Unauthorized(f"missing API key; send the header 'Authorization: {SCHEME} <key>'", headers=CHALLENGE)
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != SCHEME.lower() or not presented.strip():
            raise Unauthorized(
                f"the Authorization header must read '{SCHEME} <key>' (another scheme or no key was sent)",
                headers=CHALLENGE,
            )
        digest = _digest(presented.strip())
        # Compare against every key, without stopping early, so timing tells nothing.
        matched = False
        for accepted in self._digests:
            matched |= hmac.compare_digest(digest, accepted)
        if not matched:
            raise Unauthorized("invalid API key", headers=CHALLENGE)
