"""Upload a file to an SFTP folder: key authentication, checked host key, verified copy.

The target is written as a URL::

    sftp://user@host[:port]/folder?key=/path/to/private_key[&known_hosts=/path/to/known_hosts]

- **Key authentication only.** ``key`` (an unencrypted OpenSSH or PEM private
  key file) is required. A URL that carries a password (``user:secret@host``
  or ``?password=``) is refused with :class:`SftpUrlError`; the message never
  repeats the secret. The SSH agent and ``~/.ssh/id_*`` are not consulted, so
  the key in the URL is the only credential ever offered.
- **Host key checked, always.** With ``known_hosts`` the server's key must be in
  that file; without it, in the user's ``~/.ssh/known_hosts``. An unknown or
  changed host key refuses the upload. There is deliberately no
  "accept new keys" mode: the first connection is exactly when a
  man-in-the-middle would be trusted. Record the vendor's key once, out of
  band: ``ssh-keyscan -p PORT HOST >> known_hosts``, then compare its
  fingerprint (``ssh-keygen -lf known_hosts``) with the one the vendor gives.
- **The folder** is the URL's path as the server sees it (``/upload``); an
  empty path is the login folder.

How a file is uploaded (:meth:`SftpTarget.upload`):

1. It is written to ``<folder>/<name>.partial`` (vendors ignore ``*.partial``),
   whose mode is set to 0600 before any byte is written. A server that
   refuses ``chmod`` (some managed SFTP services do) gets a warning and the
   server's default mode.
2. The partial file is **verified**: its remote size must equal the local
   size, and the SHA-256 of its content, *read back over the connection*,
   must equal the local one. SFTP has no portable server-side hash
   (OpenSSH implements no ``check-file``), so verification downloads the file
   once more: it doubles the bytes transferred (about 1 MB for a 5,000-row
   export, a fraction of a second on a normal link), in exchange for proof
   that the vendor's copy is byte-identical.
3. Only then is it renamed to ``<folder>/<name>`` with
   ``posix-rename@openssh.com``, which replaces an existing file atomically,
   so a retried upload of the same name overwrites rather than duplicates, and
   a vendor never sees a partial or unverified file under the final name. The
   server must support that extension (OpenSSH does since 4.8).

Failures, as a tree::

    SftpError
    ├── SftpUrlError        the URL is malformed or carries a password (also a ValueError)
    ├── SftpRefused         the server or our configuration says no: authentication
    │                       failed, host key unknown or changed, key file unreadable,
    │                       folder missing or not writable. Not retried: it will fail
    │                       the same way until someone changes the configuration.
    └── SftpUnavailable     network errors, timeouts, SSH protocol errors or a failed
                            verification that persisted through every retry.

Transient failures are retried :data:`DEFAULT_RETRIES` times with exponential
backoff (:data:`DEFAULT_BACKOFF` seconds, doubling), each time on a new
connection. Connect, banner, authentication and every SFTP operation have a
timeout (:data:`DEFAULT_TIMEOUT`), so a silent server cannot hang a worker.
Logs and error messages name the target as ``sftp://user@host:port/folder``:
never a password, never key material.
"""

from __future__ import annotations

import hashlib
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

if TYPE_CHECKING:
    # Imported where used: paramiko (and cryptography) take about 0.4 s to import,
    # and most processes that import ``channels`` never upload anything.
    import paramiko

__all__ = [
    "DEFAULT_BACKOFF",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "PARTIAL_SUFFIX",
    "REMOTE_MODE",
    "SftpError",
    "SftpRefused",
    "SftpTarget",
    "SftpUnavailable",
    "SftpUrlError",
]

log = structlog.get_logger(__name__)

#: Seconds allowed for the TCP connect, the SSH banner, authentication and each SFTP operation.
DEFAULT_TIMEOUT = 10.0
#: How many times a transient failure is retried (so at most ``1 + DEFAULT_RETRIES`` attempts).
DEFAULT_RETRIES = 3
#: Seconds before the first retry; each later retry waits twice as long as the one before.
DEFAULT_BACKOFF = 1.0
#: Suffix of the file being uploaded, renamed away once verified.
PARTIAL_SUFFIX = ".partial"
#: Mode of uploaded files: the exports hold members' addresses.
REMOTE_MODE = 0o600

_CHUNK = 32 * 1024
_QUERY_KEYS = frozenset({"key", "known_hosts"})
_SECRET_KEYS = frozenset({"password", "passwd", "pass", "passphrase", "secret"})


class SftpError(Exception):
    """An SFTP upload could not be done."""


class SftpUrlError(SftpError, ValueError):
    """The SFTP URL is malformed or carries a password."""


class SftpRefused(SftpError):
    """The server or the configuration refuses the upload; retrying will not help."""


class SftpUnavailable(SftpError):
    """The upload failed for a transient reason on every attempt."""


class _VerifyMismatch(Exception):
    """The remote copy differs from the local file (retried like a network error)."""


def _refuse_unknown_host() -> paramiko.MissingHostKeyPolicy:
    """The only host-key policy: a server whose key is not in known_hosts is refused."""
    import paramiko

    class RefuseUnknownHost(paramiko.MissingHostKeyPolicy):
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            raise SftpRefused(
                f"the host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in "
                "known_hosts; add it out of band (ssh-keyscan) after checking its fingerprint"
            )

    return RefuseUnknownHost()


@dataclass(frozen=True, kw_only=True)
class SftpTarget:
    """A folder on an SFTP server, and how to reach it.

    Build it with :meth:`from_url`; the keyword arguments exist for tests and
    for a caller that wants other timeouts.
    """

    host: str
    port: int = 22
    username: str
    folder: str
    key_path: Path
    known_hosts: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SftpTarget:
        """Parse ``sftp://user@host[:port]/folder?key=...[&known_hosts=...]``.

        Args:
            url: The target URL (see the module docstring).
            timeout: Seconds for connect, banner, authentication and each SFTP operation.
            retries: How many times a transient failure is retried.
            backoff: Seconds before the first retry, doubling after each.
            sleep: Called with the backoff delay; tests pass a recorder.

        Returns:
            The target; nothing is contacted yet.

        Raises:
            SftpUrlError: The URL is not an ``sftp://`` URL with a user, a host and
                a ``key``, has unknown parameters, or carries a password.
        """
        parts = urlsplit(url)
        if parts.scheme != "sftp":
            raise SftpUrlError("the direct-mail upload URL must start with sftp://")
        if parts.password is not None:
            raise SftpUrlError(
                "the SFTP URL carries a password; loyalcast authenticates with a key only: "
                "remove the password and add ?key=/path/to/private_key"
            )
        if not parts.hostname or not parts.username:
            raise SftpUrlError("the SFTP URL must look like sftp://user@host[:port]/folder?key=...")
        try:
            port = parts.port or 22
        except ValueError:
            raise SftpUrlError("the SFTP URL has an invalid port") from None
        query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name.lower() in _SECRET_KEYS:
                raise SftpUrlError(
                    f"the SFTP URL carries a {name!r} parameter; loyalcast authenticates "
                    "with an unencrypted key file only (?key=/path/to/private_key)"
                )
            if name not in _QUERY_KEYS:
                raise SftpUrlError(
                    f"unknown SFTP URL parameter {name!r} (expected key, known_hosts)"
                )
            if name in query:
                raise SftpUrlError(f"the SFTP URL gives {name!r} twice")
            query[name] = value
        if not query.get("key"):
            raise SftpUrlError("the SFTP URL needs ?key=/path/to/private_key")
        folder = unquote(parts.path)
        folder = folder.rstrip("/") or ("/" if folder.startswith("/") else ".")
        known_hosts = query.get("known_hosts")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username),
            folder=folder,
            key_path=Path(query["key"]).expanduser(),
            known_hosts=Path(known_hosts).expanduser() if known_hosts else None,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            sleep=sleep,
        )

    def describe(self) -> str:
        """The target for logs and messages: ``sftp://user@host:port/folder``, no secrets."""
        folder = self.folder if self.folder.startswith("/") else f"/{self.folder}"
        return f"sftp://{self.username}@{self.host}:{self.port}{folder}"

    def remote_path(self, name: str) -> str:
        """Where a file called ``name`` lands in the target folder."""
        return posixpath.join(self.folder, name)

    def upload(self, local_path: Path) -> None:
        """Upload ``local_path`` into the folder under its own name, verified.

        Args:
            local_path: The file to upload; its name is kept.

        Raises:
            SftpRefused: Authentication, host key, key file or remote permissions
                refuse the upload (not retried).
            SftpUnavailable: Every attempt failed for a transient reason.
        """
        import paramiko

        # What a retry may cure: socket errors and timeouts (OSError), a connection
        # closed mid-operation (EOFError), SSH protocol errors and a bad copy.
        transient = (OSError, EOFError, paramiko.SSHException, _VerifyMismatch)
        local_path = Path(local_path)
        size, digest = _size_and_sha256(local_path)
        attempts = self.retries + 1
        last: BaseException | None = None
        for attempt in range(1, attempts + 1):
            try:
                self._upload_once(local_path, size, digest)
                return
            except SftpRefused:
                raise
            except (FileNotFoundError, PermissionError) as exc:
                # An SFTP status: the folder is missing or not writable for this user.
                raise SftpRefused(
                    f"{self.describe()} refused {local_path.name}: {exc.strerror or exc}"
                ) from exc
            except paramiko.AuthenticationException as exc:
                raise SftpRefused(
                    f"{self.describe()} refused the key {self.key_path}: {exc}"
                ) from exc
            except paramiko.BadHostKeyException as exc:
                raise SftpRefused(
                    f"the host key of {self.host} changed ({exc.key.get_name()} "
                    f"{exc.key.fingerprint}); check it with the vendor before trusting it"
                ) from exc
            except transient as exc:
                last = exc
                log.warning(
                    "sftp upload attempt failed",
                    target=self.describe(),
                    file=local_path.name,
                    attempt=attempt,
                    attempts=attempts,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if attempt < attempts:
                    self.sleep(self.backoff * 2 ** (attempt - 1))
        raise SftpUnavailable(
            f"could not upload {local_path.name} to {self.describe()} after {attempts} "
            f"attempts: {type(last).__name__}: {last}"
        ) from last

    def _client(self) -> paramiko.SSHClient:
        import paramiko

        client = paramiko.SSHClient()
        try:
            if self.known_hosts is not None:
                client.load_host_keys(str(self.known_hosts))
            else:
                client.load_system_host_keys()
        except OSError as exc:
            raise SftpRefused(f"cannot read known_hosts {self.known_hosts}: {exc}") from exc
        client.set_missing_host_key_policy(_refuse_unknown_host())
        return client

    def _key(self) -> paramiko.PKey:
        import paramiko

        try:
            return paramiko.PKey.from_path(self.key_path)
        except (OSError, paramiko.SSHException, ValueError) as exc:
            # The exception names the problem ("private key file is encrypted", ...);
            # it never contains the key itself.
            raise SftpRefused(
                f"cannot use the private key {self.key_path}: {type(exc).__name__}: {exc}"
            ) from exc

    def _upload_once(self, local_path: Path, size: int, digest: str) -> None:
        key = self._key()
        client = self._client()
        try:
            client.connect(
                hostname=self.host,
                port=self.port,
                username=self.username,
                pkey=key,
                allow_agent=False,
                look_for_keys=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
            )
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:  # always set on a client from open_sftp()
                channel.settimeout(self.timeout)
            final = self.remote_path(local_path.name)
            partial = final + PARTIAL_SUFFIX
            with local_path.open("rb") as src, sftp.open(partial, "wb") as dst:
                self._restrict(dst, partial)
                dst.set_pipelined(True)
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
            self._verify(sftp, partial, size, digest)
            sftp.posix_rename(partial, final)
            remote_size = sftp.stat(final).st_size
            if remote_size != size:
                raise _VerifyMismatch(f"{final} has {remote_size} bytes after rename, not {size}")
        finally:
            client.close()

    def _restrict(self, handle: paramiko.SFTPFile, path: str) -> None:
        try:
            handle.chmod(REMOTE_MODE)
        except OSError as exc:
            if not _is_sftp_status(exc):
                raise
            log.warning(
                "sftp server refused chmod; the file keeps the server's default mode",
                target=self.describe(),
                file=posixpath.basename(path),
                error=str(exc),
            )

    @staticmethod
    def _verify(sftp: paramiko.SFTPClient, path: str, size: int, digest: str) -> None:
        remote_size = sftp.stat(path).st_size
        if remote_size != size:
            raise _VerifyMismatch(f"{path} has {remote_size} bytes, the local file {size}")
        sha = hashlib.sha256()
        with sftp.open(path, "rb") as fh:
            fh.prefetch(size)
            while chunk := fh.read(_CHUNK):
                sha.update(chunk)
        if sha.hexdigest() != digest:
            raise _VerifyMismatch(f"{path} read back with a different sha256")


def _is_sftp_status(exc: OSError) -> bool:
    """True for an error status the SFTP server answered, False for a connection error."""
    return type(exc) in (OSError, PermissionError, FileNotFoundError)


def _size_and_sha256(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()
