"""Drop files on disk: their names, the manifest, and atomic 0600 writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_SUFFIX", "atomic_write", "drop_id", "drop_stem", "manifest_bytes"]

#: The manifest of ``x.csv`` is ``x.manifest.json``.
MANIFEST_SUFFIX = ".manifest.json"
_FILE_MODE = 0o600
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_STAMP = "%Y%m%dT%H%M%SZ"


def _safe(text: str, fallback: str) -> str:
    """``text`` usable in a file name: letters, digits, ``_`` and ``-`` only, at most 64."""
    return _UNSAFE.sub("-", text).strip("-")[:64] or fallback


def drop_id(campaign: str, run_id: str, delivery_ids: Iterable[int]) -> str:
    """12 hex characters naming a drop by its content: campaign, run, sorted delivery ids."""
    text = "\n".join([campaign, run_id, ",".join(str(i) for i in sorted(delivery_ids))])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def drop_stem(
    directory: Path, campaign: str, run_id: str, delivery_ids: Iterable[int], now: datetime
) -> str:
    """The file name, without extension, of the drop holding ``delivery_ids``.

    ``<campaign>-run<run_id>-<UTC timestamp>-<drop id>`` (``-run<run_id>`` left
    out when there is no run). When ``directory`` already holds a CSV of the
    same campaign, run and drop id (an earlier attempt at the same
    deliveries), its name is reused, timestamp included, so a retry rewrites
    and re-uploads that file instead of making a second one.
    """
    prefix = _safe(campaign, "campaign") + (f"-run{_safe(run_id, '0')}" if run_id else "")
    short = drop_id(campaign, run_id, delivery_ids)
    earlier = sorted(directory.glob(f"{prefix}-????????T??????Z-{short}.csv"))
    if earlier:
        return earlier[0].name.removesuffix(".csv")
    return f"{prefix}-{now.strftime(_STAMP)}-{short}"


def manifest_bytes(
    *,
    file: str,
    data: bytes,
    rows: int,
    columns: Sequence[str],
    campaign: str,
    run_id: Any,
    created_at: datetime,
    invalid: int,
    household: int,
) -> bytes:
    """The manifest describing a CSV drop, as UTF-8 JSON."""
    manifest = {
        "file": file,
        "rows": rows,
        "columns": list(columns),
        "sha256": hashlib.sha256(data).hexdigest(),
        "campaign": campaign,
        "run_id": run_id,
        "created_at": created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "skipped": {"invalid": invalid, "household": household},
    }
    return (json.dumps(manifest, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, the old file, or complete.

    The bytes go to a temporary file in the same folder, created with
    ``O_EXCL`` and mode 0600, flushed with ``fsync``, then renamed over
    ``path``; the folder is fsynced (where the filesystem allows) so the rename
    survives a power cut. On any failure the temporary file is removed and the
    error raised.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        try:
            os.fchmod(fd, _FILE_MODE)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; best effort, as some network filesystems refuse it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # the file itself is complete and fsynced; only the rename's durability is at stake
    finally:
        os.close(fd)
