"""``python -m app.healthcheck``: exit 0 when the local service is ready (the container HEALTHCHECK)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from app.config import get_settings


def main() -> int:
    settings = get_settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.port}/health/ready", timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
