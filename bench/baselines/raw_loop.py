"""Baseline (ii), the loop: ``python -m bench.baselines.raw_loop REQUESTS.jsonl``.

Sends each request of the file (JSON lines of ``url``, ``headers``, ``body``,
built by :func:`bench.baselines.raw_http.build_requests`) in turn, from one
thread: one ``http.client`` connection per request (the fakes answer HTTP/1.0
and close), no queue, no database, no rendering. Prints ``{"requests", "ok",
"messages", "seconds", "errors"}`` as JSON: ``messages`` counts the
recipients of the accepted requests (a SendGrid request carries up to 1000).
It imports the standard library only, so the process is as lean as a client
can be.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["loop", "main"]

#: Seconds for connecting and for each answer.
TIMEOUT = 10.0


def loop(requests: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Send every request in turn; count the 2xx answers."""
    prepared = []
    for request in requests:
        url = urlsplit(request["url"])
        prepared.append(
            (
                url.hostname or "127.0.0.1",
                url.port or 80,
                url.path,
                request["body"].encode(),
                request["headers"],
                len(request["recipients"]),
            )
        )
    ok = messages = 0
    errors: list[str] = []
    started = time.perf_counter()
    for host, port, path, body, headers, recipients in prepared:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
        try:
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            if 200 <= response.status < 300:
                ok += 1
                messages += recipients
            elif len(errors) < 5:
                errors.append(f"{response.status} {path}")
        finally:
            conn.close()
    seconds = time.perf_counter() - started
    return {
        "requests": len(prepared),
        "ok": ok,
        "messages": messages,
        "seconds": seconds,
        "errors": errors,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.baselines.raw_loop REQUESTS.jsonl", file=sys.stderr)
        return 2
    lines = Path(args[0]).read_text(encoding="utf-8").splitlines()
    print(json.dumps(loop([json.loads(line) for line in lines if line])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
