"""A real OpenSSH SFTP server on loopback, for the direct-mail upload tests.

The ``sftp_server`` fixture starts ``/usr/sbin/sshd -D -e`` with a generated
``sshd_config`` on 127.0.0.1 and a free port, a throwaway ed25519 host key,
and a throwaway user key in ``authorized_keys``; it serves ``internal-sftp``,
allows only the current user, by key only, and is stopped after the test.
No system sshd service is started or needed.

Load it with ``pytest_plugins = ["tests.sftp_server"]`` (a test module or the
root conftest). Without ``/usr/sbin/sshd`` the test is skipped with a message
on a laptop and fails under ``CI=true``, like :func:`tests.conftest.require_service`.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import IN_CI

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
#: Where a root sshd insists on its privilege-separation chroot (Debian's path).
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class SftpServer:
    """A running sshd: where it listens, who may log in, and with which files."""

    host: str
    port: int
    username: str
    key_path: Path
    """The user's private key (unencrypted ed25519)."""
    known_hosts: Path
    """A known_hosts file holding only this server's host key."""
    root: Path
    """A folder of this server's own, for tests to upload into."""
    log_path: Path

    def url(self, folder: Path | str, *, known_hosts: Path | None = None) -> str:
        """``sftp://user@127.0.0.1:port/folder?key=...&known_hosts=...`` for this server."""
        kh = known_hosts if known_hosts is not None else self.known_hosts
        return (
            f"sftp://{self.username}@{self.host}:{self.port}{quote(str(folder))}"
            f"?key={quote(str(self.key_path))}&known_hosts={quote(str(kh))}"
        )


def require_sshd() -> None:
    """Skip (laptop) or fail (CI) when OpenSSH's server is not installed."""
    if SSHD.exists() and os.access(SSHD, os.X_OK):
        return
    message = (
        f"{SSHD} is missing; install openssh-server (apt-get install openssh-server) "
        "to run the SFTP upload tests against a real server"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "loyalcast-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _openssh_version() -> tuple[int, int]:
    out = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", out.stderr + out.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _config(directory: Path, port: int, username: str) -> str:
    lines = [
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {directory / 'host_ed25519'}",
        f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {username}",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    if _openssh_version() >= (9, 8):
        # Newer sshd penalizes repeated failures from one address; tests fail on purpose.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer within {START_TIMEOUT} s: {log_path.read_text()}")


@contextmanager
def running_sshd(directory: Path) -> Iterator[SftpServer]:
    """Start sshd with its keys and config in ``directory``; stop it on exit."""
    require_sshd()
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        # A root sshd refuses to start without it; systemd would create it.
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    username = pwd.getpwuid(os.geteuid()).pw_name
    _keygen(directory / "host_ed25519")
    _keygen(directory / "user_ed25519")
    (directory / "authorized_keys").write_bytes((directory / "user_ed25519.pub").read_bytes())
    root = directory / "remote"
    root.mkdir()
    port = _free_port()
    config = directory / "sshd_config"
    config.write_text(_config(directory, port, username))
    host_key = (directory / "host_ed25519.pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    log_path = directory / "sshd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(process, port, log_path)
        yield SftpServer(
            host="127.0.0.1",
            port=port,
            username=username,
            key_path=directory / "user_ed25519",
            known_hosts=known_hosts,
            root=root,
            log_path=log_path,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    """A real OpenSSH SFTP server on 127.0.0.1, stopped after the test."""
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
