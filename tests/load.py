"""A load generator for tests of stopping and failing servers: every outcome counted."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.images import decode_png
from tests.server import REPO

SAMPLE = (REPO / "tests" / "data" / "noisy-digit.png").read_bytes()


@dataclass
class Load:
    """``POST /denoise`` (or ``path``) from a few threads until stopped, every outcome counted.

    Outcomes: the status of a complete response (a 200 must carry a decodable PNG); ``refused``
    (no connection: nothing was sent); ``unanswered`` (the connection failed before any response
    began: a request the service never took, such as one still in the listen backlog when a stopping
    server closes its socket); ``cut`` (the connection failed after the response began).
    """

    url: str
    threads: int = 4
    max_requests: int = 20_000
    #: The route asked (with its query) and the headers sent besides the content type.
    path: str = "/denoise"
    headers: dict[str, str] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: ``X-Model-Version`` of the 200s.
    versions: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def served(self) -> int:
        with self._lock:
            return sum(n for outcome, n in self.outcomes.items() if outcome.isdigit())

    def snapshot(self) -> Counter[str]:
        """The outcomes so far, copied."""
        with self._lock:
            return Counter(self.outcomes)

    def wait_served(self, count: int, timeout: float = 120) -> None:
        """Block until ``count`` responses have come back in all."""
        deadline = time.monotonic() + timeout
        while self.served() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.served()} of {count} responses in {timeout} s: {self.outcomes}")
            time.sleep(0.05)

    def _record(self, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def _run(self) -> None:
        headers = {"content-type": "image/png", **self.headers}
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set() and sum(self.outcomes.values()) < self.max_requests:
                began = False
                try:
                    with client.stream("POST", f"{self.url}{self.path}", content=SAMPLE, headers=headers) as response:
                        began = True
                        body = response.read()
                except httpx.ConnectError:
                    self._record("refused")
                    self._stop.wait(0.05)
                    continue
                except httpx.TransportError:
                    self._record("cut" if began else "unanswered")
                    continue
                if response.status_code == 200:
                    decode_png(body)
                    with self._lock:
                        self.versions[response.headers.get("x-model-version", "-")] += 1
                self._record(str(response.status_code))


def access_lines(logs: str, path: str) -> list[dict[str, object]]:
    """The service's JSON access lines for ``path`` in a container's output."""
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [record for record in records if record.get("path") == path]
