"""What a route or a gRPC method asks of every request to it, declared where the route is.

- ``access``: ``public`` (probes, documentation), ``key`` (an API key where keys are set),
  ``metrics`` (a key only where ``DENOISE_METRICS_NEED_KEY`` is set), or ``admin`` (an admin key,
  always: loading and unloading models).
- ``limited``: the request holds one of the worker's ``DENOISE_MAX_INFLIGHT`` slots while it runs
  (inference); beyond them it is refused with 503 at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Access = Literal["public", "key", "metrics", "admin"]


@dataclass(frozen=True)
class Policy:
    access: Access = "key"
    limited: bool = False


PUBLIC = Policy("public")
KEYED = Policy("key")
INFERENCE = Policy("key", limited=True)
METRICS = Policy("metrics")
ADMIN = Policy("admin")
