"""The file outbox: what a channel without credentials does instead of sending.

Each message becomes one JSON line in ``<outbox dir>/<channel>.jsonl``. The
line is written with a single ``write()`` on a file opened ``O_APPEND``, so
lines from many worker processes never interleave and a line is either whole
or absent when a process is killed. Files are created with mode 0600: they
hold members' addresses.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from .base import BatchChannel, Message, Receipt

__all__ = ["OutboxChannel", "read_outbox"]


class OutboxChannel(BatchChannel):
    """Writes rendered messages to a JSON-lines file instead of a provider."""

    live: ClassVar[bool] = False
    max_batch: ClassVar[int] = 100

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.path = Path(directory) / f"{name}.jsonl"
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._fd

    def send(self, message: Message) -> Receipt:
        now = datetime.now(UTC)
        line = json.dumps(
            {
                "delivery_id": message.delivery_id,
                "dedupe_key": message.dedupe_key,
                "member_id": message.member_id,
                "channel": self.name,
                "to": message.to,
                "category": message.category,
                "campaign": message.campaign,
                "parts": dict(message.parts),
                "test": bool(message.metadata.get("test", False)),
                "written_at": now.isoformat(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        data = (line + "\n").encode()
        with self._lock:
            fd = self._open()
            written = os.write(fd, data)
        if written != len(data):  # pragma: no cover - a full disk
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        return Receipt(provider_message_id=f"outbox-{message.delivery_id}", accepted_at=now)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read_outbox(directory: Path, channel: str) -> list[dict[str, object]]:
    """Every line an outbox channel wrote, parsed (for tests and the demo summary)."""
    path = Path(directory) / f"{channel}.jsonl"
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
