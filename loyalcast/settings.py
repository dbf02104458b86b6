"""The one place that reads the environment.

Every setting has a name (the environment variable), a default and a parser.
``Settings.from_env()`` reads them all at start; a malformed value raises
``SettingsError`` naming the variable, so a process refuses to start rather
than run half-configured. Other modules receive a ``Settings`` and never look
at ``os.environ`` themselves.

With no configuration at all, loyalcast keeps its state under ``./.loyalcast``:
a SQLite database (WAL) and the file outbox. ``LOYALCAST_REDIS_URL`` unset
means "no shared Redis": ``loyalcast demo`` and ``loyalcast run`` start a
private ``redis-server`` of their own, while ``loyalcast worker`` and
``loyalcast scheduler`` (which must share one Redis) refuse to start.
"""

from __future__ import annotations

import os
import secrets
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Settings", "SettingsError", "redact_url"]

T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value loyalcast cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be a positive number")
    return value


def _database_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if not scheme.startswith(("sqlite", "postgres")):
        raise ValueError("must be a sqlite:/// or postgresql:// URL")
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        # psycopg 3 is the driver we ship; spell it out for SQLAlchemy.
        raw = "postgresql+psycopg" + raw[len(scheme) :]
    return raw


def _redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def _sftp_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme != "sftp" or not parts.hostname or not parts.username:
        raise ValueError("must look like sftp://user@host[:port]/folder?key=/path/to/key")
    if parts.password is not None:
        raise ValueError("passwords are not accepted: use key authentication (?key=...)")
    return raw


def _time_zone(raw: str) -> str:
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {raw!r}") from None
    return raw


def _region(raw: str) -> str:
    if len(raw) != 2 or not raw.isalpha():
        raise ValueError("must be a two-letter ISO country code such as US")
    return raw.upper()


def _search_path(raw: str) -> str:
    if any(not part.strip() for part in raw.split(os.pathsep)):
        raise ValueError(f"folders separated by {os.pathsep!r}, none empty")
    return raw


def _meta(env: str, parse: Callable[[str], Any], doc: str) -> dict[str, Any]:
    return {"env": env, "parse": parse, "doc": doc}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """loyalcast's configuration, read once from the environment."""

    data_dir: Path = field(
        default=Path(".loyalcast"),
        metadata=_meta(
            "LOYALCAST_DATA_DIR",
            Path,
            "Where the embedded default keeps its SQLite file, outbox and private Redis socket.",
        ),
    )
    database_url: str | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_DATABASE_URL",
            _database_url,
            "SQLAlchemy URL; default sqlite:///<data dir>/loyalcast.db.",
        ),
    )
    redis_url: str | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_REDIS_URL",
            _redis_url,
            "Shared Redis for the broker, locks and caps; unset: a private redis-server.",
        ),
    )
    queue_namespace: str = field(
        default="loyalcast",
        metadata=_meta(
            "LOYALCAST_QUEUE_NAMESPACE",
            str,
            "Prefix of every Redis key loyalcast writes (lets programs share one Redis).",
        ),
    )
    outbox_dir: Path | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_OUTBOX_DIR",
            Path,
            "Where channels in outbox mode write JSON lines; default <data dir>/outbox.",
        ),
    )
    batch_size: int = field(
        default=1000,
        metadata=_meta(
            "LOYALCAST_BATCH_SIZE",
            _positive_int,
            "Delivery rows per deliver job.",
        ),
    )
    send_concurrency: int = field(
        default=8,
        metadata=_meta(
            "LOYALCAST_SEND_CONCURRENCY",
            _positive_int,
            "Requests each worker process keeps in flight to a provider that takes one"
            " message per request (Twilio, FCM, Web Push).",
        ),
    )
    lease_seconds: float = field(
        default=300.0,
        metadata=_meta(
            "LOYALCAST_LEASE_SECONDS",
            _positive_float,
            "How long a claimed 'sending' row or a queued row may wait before it is swept.",
        ),
    )
    tick_seconds: float = field(
        default=5.0,
        metadata=_meta(
            "LOYALCAST_TICK_SECONDS",
            _positive_float,
            "How often the scheduler leader claims due runs.",
        ),
    )
    sweep_seconds: float = field(
        default=30.0,
        metadata=_meta(
            "LOYALCAST_SWEEP_SECONDS",
            _positive_float,
            "How often the scheduler leader sweeps stale and deferred deliveries.",
        ),
    )
    leader_ttl_seconds: float = field(
        default=15.0,
        metadata=_meta(
            "LOYALCAST_LEADER_TTL_SECONDS",
            _positive_float,
            "How long the scheduler leader lock lives without renewal.",
        ),
    )
    worker_processes: int = field(
        default=2,
        metadata=_meta(
            "LOYALCAST_WORKER_PROCESSES",
            _positive_int,
            "dramatiq worker processes started by `loyalcast worker`.",
        ),
    )
    worker_threads: int = field(
        default=4,
        metadata=_meta(
            "LOYALCAST_WORKER_THREADS",
            _positive_int,
            "Threads per worker process.",
        ),
    )
    heartbeat_timeout_ms: int = field(
        default=60_000,
        metadata=_meta(
            "LOYALCAST_HEARTBEAT_TIMEOUT_MS",
            _positive_int,
            "After this long without a heartbeat a dead worker's unacked jobs are redelivered.",
        ),
    )
    maintenance_chance: int = field(
        default=1000,
        metadata=_meta(
            "LOYALCAST_MAINTENANCE_CHANCE",
            _positive_int,
            "Out of 1,000,000 broker commands, how many run Redis queue maintenance.",
        ),
    )
    default_time_zone: str = field(
        default="UTC",
        metadata=_meta(
            "LOYALCAST_DEFAULT_TIMEZONE",
            _time_zone,
            "The program's time zone, used for members who have none.",
        ),
    )
    default_region: str = field(
        default="US",
        metadata=_meta(
            "LOYALCAST_DEFAULT_REGION",
            _region,
            "Country assumed for imported phone numbers written without +country code.",
        ),
    )
    policy_file: Path | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_POLICY_FILE",
            Path,
            "The program policy file (YAML): caps, quiet hours, default time zone, attributes.",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=_meta(
            "LOYALCAST_LOG_LEVEL",
            str.upper,
            "DEBUG, INFO, WARNING or ERROR.",
        ),
    )

    # --- Providers. A channel is live when its credentials are set. ---
    twilio_account_sid: str | None = field(
        default=None, metadata=_meta("TWILIO_ACCOUNT_SID", str, "Twilio account SID (AC...).")
    )
    twilio_auth_token: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "TWILIO_AUTH_TOKEN", str, "Twilio auth token; also checks webhook signatures."
        ),
    )
    twilio_from_number: str | None = field(
        default=None, metadata=_meta("TWILIO_FROM_NUMBER", str, "Sender number in E.164.")
    )
    twilio_messaging_service_sid: str | None = field(
        default=None,
        metadata=_meta(
            "TWILIO_MESSAGING_SERVICE_SID", str, "Messaging Service (MG...), instead of a number."
        ),
    )
    twilio_base_url: str = field(
        default="https://api.twilio.com",
        metadata=_meta(
            "LOYALCAST_TWILIO_BASE_URL", _http_url, "Where the Twilio SDK sends requests."
        ),
    )
    twilio_rate: float = field(
        default=1.0,
        metadata=_meta(
            "LOYALCAST_TWILIO_RATE",
            _positive_float,
            "SMS per second across all workers (a long code sends 1/s; a Messaging Service more).",
        ),
    )
    sendgrid_api_key: str | None = field(
        default=None, repr=False, metadata=_meta("SENDGRID_API_KEY", str, "SendGrid API key.")
    )
    sendgrid_from_email: str | None = field(
        default=None, metadata=_meta("SENDGRID_FROM_EMAIL", str, "Sender address of every email.")
    )
    sendgrid_api_host: str = field(
        default="https://api.sendgrid.com",
        metadata=_meta(
            "SENDGRID_API_HOST", _http_url, "SendGrid API host; EU: https://api.eu.sendgrid.com."
        ),
    )
    sendgrid_webhook_public_key: str | None = field(
        default=None,
        metadata=_meta(
            "SENDGRID_WEBHOOK_PUBLIC_KEY",
            str,
            "Public key (base64) that signs SendGrid's event webhook.",
        ),
    )
    sendgrid_rate: float = field(
        default=50.0,
        metadata=_meta("LOYALCAST_SENDGRID_RATE", _positive_float, "SendGrid requests per second."),
    )
    google_application_credentials: Path | None = field(
        default=None,
        metadata=_meta(
            "GOOGLE_APPLICATION_CREDENTIALS", Path, "Service-account JSON file for FCM."
        ),
    )
    fcm_project_id: str | None = field(
        default=None, metadata=_meta("FCM_PROJECT_ID", str, "Firebase project id.")
    )
    fcm_base_url: str = field(
        default="https://fcm.googleapis.com",
        metadata=_meta("LOYALCAST_FCM_BASE_URL", _http_url, "Where FCM HTTP v1 requests go."),
    )
    fcm_rate: float = field(
        default=500.0,
        metadata=_meta("LOYALCAST_FCM_RATE", _positive_float, "FCM requests per second."),
    )
    vapid_private_key: str | None = field(
        default=None,
        repr=False,
        metadata=_meta("VAPID_PRIVATE_KEY", str, "Web Push VAPID private key (base64url or PEM)."),
    )
    vapid_subject: str | None = field(
        default=None,
        metadata=_meta("VAPID_SUBJECT", str, "VAPID contact: mailto: or https: URL."),
    )
    webpush_rate: float = field(
        default=200.0,
        metadata=_meta("LOYALCAST_WEBPUSH_RATE", _positive_float, "Web Push requests per second."),
    )
    direct_mail_dir: Path | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_DIRECT_MAIL_DIR", Path, "Folder where direct-mail export files are dropped."
        ),
    )
    direct_mail_sftp_url: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "LOYALCAST_DIRECT_MAIL_SFTP_URL",
            _sftp_url,
            "sftp://user@host[:port]/folder?key=/path/to/key: upload each export there.",
        ),
    )
    public_url: str | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_PUBLIC_URL", _http_url, "Where providers and members reach `loyalcast api`."
        ),
    )
    api_token: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "LOYALCAST_API_TOKEN",
            str,
            "Bearer token for the campaign and event endpoints of `loyalcast api`; unset: "
            "those endpoints answer 503.",
        ),
    )
    api_max_body_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata=_meta(
            "LOYALCAST_API_MAX_BODY_BYTES",
            _positive_int,
            "Largest request body `loyalcast api` accepts (webhooks included); larger: 413.",
        ),
    )
    secret_key: str | None = field(
        default=None,
        repr=False,
        metadata=_meta(
            "LOYALCAST_SECRET_KEY",
            str,
            "Signs unsubscribe links; unset: a key generated into <data dir>/secret.key.",
        ),
    )
    template_path: str | None = field(
        default=None,
        metadata=_meta(
            "LOYALCAST_TEMPLATE_PATH",
            _search_path,
            "Folders of template folders for campaigns sent through the API "
            "(separated by ':'); the built-ins are searched after them.",
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: a variable is set to a value that does not parse.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except (ValueError, TypeError) as exc:
                raise SettingsError(name, str(exc) or "malformed value") from None
        settings = cls(**values)
        if settings.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError("LOYALCAST_LOG_LEVEL", "must be DEBUG, INFO, WARNING or ERROR")
        settings._check_providers(environ)
        return settings

    def _check_providers(self, environ: Mapping[str, str]) -> None:
        """A provider configured halfway is an error, not a silent fall back to the outbox."""
        groups = [
            (
                "Twilio SMS",
                ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"],
                ["TWILIO_FROM_NUMBER", "TWILIO_MESSAGING_SERVICE_SID"],
            ),
            ("SendGrid email", ["SENDGRID_API_KEY", "SENDGRID_FROM_EMAIL"], []),
            ("FCM push", ["GOOGLE_APPLICATION_CREDENTIALS", "FCM_PROJECT_ID"], []),
            ("Web Push", ["VAPID_PRIVATE_KEY", "VAPID_SUBJECT"], []),
        ]
        given = {name for name, value in environ.items() if value.strip()}
        for provider, required, one_of in groups:
            if not given & {*required, *one_of}:
                continue
            for name in required:
                if name not in given:
                    raise SettingsError(
                        name, f"needed for {provider}, whose other settings are set"
                    )
            if one_of and not given & set(one_of):
                raise SettingsError(one_of[0], f"{provider} needs {' or '.join(one_of)}")
        if self.twilio_from_number and self.twilio_messaging_service_sid:
            raise SettingsError(
                "TWILIO_MESSAGING_SERVICE_SID", "set it or TWILIO_FROM_NUMBER, not both"
            )

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting, for docs and ``--help``."""
        return [
            (f.metadata["env"], "" if f.default is None else str(f.default), f.metadata["doc"])
            for f in fields(cls)
        ]

    @classmethod
    def secret_variables(cls) -> frozenset[str]:
        """The variables whose values must never be shown or logged."""
        return frozenset(f.metadata["env"] for f in fields(cls) if not f.repr)

    def signing_key(self) -> bytes:
        """The key that signs unsubscribe links.

        ``LOYALCAST_SECRET_KEY`` when set; otherwise a random key created once in
        ``<data dir>/secret.key`` (mode 0600), which every process of an
        embedded install shares. Several machines need the variable set.
        """
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32).encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key

    @property
    def effective_database_url(self) -> str:
        """The database URL in force: the configured one or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'loyalcast.db').resolve()}"

    @property
    def template_dirs(self) -> list[Path]:
        """The folders of ``LOYALCAST_TEMPLATE_PATH``, in order."""
        if not self.template_path:
            return []
        return [Path(part.strip()) for part in self.template_path.split(os.pathsep)]

    @property
    def effective_outbox_dir(self) -> Path:
        """Where channels in outbox mode write."""
        return self.outbox_dir or self.data_dir / "outbox"

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                env[f.metadata["env"]] = str(value)
        return env
