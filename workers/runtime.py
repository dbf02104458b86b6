"""Everything a worker process needs, built once per process and lazily.

The engine is created on first use, after dramatiq has forked its worker
processes, so no connection crosses a fork. Campaign versions are immutable,
so their parsed spec and template sources are cached by id for the life of
the process.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from channels import CHANNEL_NAMES, Channel, NoLimit, OutboxChannel, RateLimiter, TokenBucket
from loyalcast.settings import Settings
from store import Campaign, CampaignVersion, make_engine, make_sessionmaker
from templates import Renderer

from .campaigns import CampaignSpec
from .cap_ledger import ledger_from
from .caps import CapCounter
from .program import Program, load_program

__all__ = ["LoadedVersion", "Runtime", "build_channels", "program_for"]


def program_for(settings: Settings) -> Program:
    """The program policy in force.

    With ``LOYALCAST_POLICY_FILE`` set, that file, validated (a bad file raises
    ``ProgramFileError`` naming its line and key); otherwise the defaults, with
    ``LOYALCAST_DEFAULT_TIMEZONE`` as the program's time zone.
    """
    if settings.policy_file is not None:
        return load_program(settings.policy_file)
    return dataclasses.replace(Program.default(), default_time_zone=settings.default_time_zone)


def _limiter(
    client: redis.Redis | None, settings: Settings, provider: str, sender: str, rate: float
) -> RateLimiter:
    if client is None:
        return NoLimit()
    key = f"{settings.queue_namespace}:rate:{provider}:{sender}"
    return TokenBucket(client, key, rate)


def build_channels(settings: Settings, client: redis.Redis | None = None) -> dict[str, Channel]:
    """One channel per name: live when its credentials are set, the file outbox otherwise.

    ``client`` is the Redis holding the shared rate-limit buckets; without it
    (a test, a one-off command) live channels are not rate limited.
    """
    outbox = settings.effective_outbox_dir
    channels: dict[str, Channel] = {name: OutboxChannel(name, outbox) for name in CHANNEL_NAMES}
    s = settings
    if (
        s.twilio_account_sid
        and s.twilio_auth_token
        and (s.twilio_from_number or s.twilio_messaging_service_sid)
    ):
        from channels.twilio import TwilioSmsChannel

        sender = s.twilio_messaging_service_sid or s.twilio_from_number or ""
        channels["sms"] = TwilioSmsChannel(
            s.twilio_account_sid,
            s.twilio_auth_token,
            from_number=None if s.twilio_messaging_service_sid else s.twilio_from_number,
            messaging_service_sid=s.twilio_messaging_service_sid,
            base_url=s.twilio_base_url,
            status_callback=f"{s.public_url}/webhooks/twilio/status" if s.public_url else None,
            limiter=_limiter(client, s, "twilio", sender, s.twilio_rate),
            concurrency=s.send_concurrency,
        )
    if s.sendgrid_api_key and s.sendgrid_from_email:
        from channels.sendgrid import SendGridEmailChannel

        channels["email"] = SendGridEmailChannel(
            s.sendgrid_api_key,
            s.sendgrid_from_email,
            host=s.sendgrid_api_host,
            limiter=_limiter(client, s, "sendgrid", s.sendgrid_from_email, s.sendgrid_rate),
        )
    fcm_ready = s.google_application_credentials and s.fcm_project_id
    vapid_ready = s.vapid_private_key and s.vapid_subject
    if fcm_ready or vapid_ready:
        from channels.fcm import FcmSender
        from channels.push import PushChannel
        from channels.webpush import WebPushSender

        fcm = None
        if s.google_application_credentials and s.fcm_project_id:
            fcm = FcmSender(
                s.google_application_credentials,
                s.fcm_project_id,
                base_url=s.fcm_base_url,
                limiter=_limiter(client, s, "fcm", s.fcm_project_id, s.fcm_rate),
            )
        webpush = None
        if s.vapid_private_key and s.vapid_subject:
            webpush = WebPushSender(
                s.vapid_private_key,
                s.vapid_subject,
                limiter=_limiter(client, s, "webpush", "vapid", s.webpush_rate),
            )
        channels["push"] = PushChannel(fcm, webpush, concurrency=s.send_concurrency)
    if s.direct_mail_dir or s.direct_mail_sftp_url:
        from channels.direct_mail import DirectMailChannel
        from channels.sftp import SftpTarget

        channels["direct_mail"] = DirectMailChannel(
            s.direct_mail_dir or s.data_dir / "direct-mail",
            sftp=SftpTarget.from_url(s.direct_mail_sftp_url) if s.direct_mail_sftp_url else None,
        )
    return channels


@dataclass(frozen=True)
class LoadedVersion:
    """A campaign version as workers use it."""

    id: int
    campaign_id: int
    campaign_name: str
    version: int
    spec: CampaignSpec
    templates: dict[str, dict[str, dict[str, str]]]
    """``{template name: {channel: {part: source}}}``: every template the campaign renders."""

    def template_for(self, payload: Mapping[str, Any] | None) -> str:
        """The template a delivery renders: its sequence step's, or the campaign's."""
        step = payload.get("step") if payload else None
        if step is not None and self.spec.steps:
            return self.spec.steps[int(step)].template
        if self.spec.template is None:
            raise LookupError(f"campaign {self.campaign_name} has no template for {payload!r}")
        return self.spec.template


class Runtime:
    """Per-process state shared by the actors: engine, channels, renderer, caches."""

    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker | None = None,
        channels: dict[str, Channel] | None = None,
        program: Program | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.renderer = Renderer()
        self._channels = channels
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._versions: dict[int, LoadedVersion] = {}
        self._signing_key: bytes | None = None
        self._redis: redis.Redis | None = None
        self._program: Program | None = program
        self._caps: CapCounter | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self.settings.effective_database_url)
            return self._engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        engine = self.engine
        with self._lock:
            if self._sessions is None:
                self._sessions = make_sessionmaker(engine)
            return self._sessions

    @property
    def signing_key(self) -> bytes:
        """The key that signs unsubscribe links (read once)."""
        with self._lock:
            if self._signing_key is None:
                self._signing_key = self.settings.signing_key()
            return self._signing_key

    @property
    def redis(self) -> redis.Redis | None:
        """The shared Redis (rate limits, caps), or None when none is configured."""
        with self._lock:
            if self._redis is None and self.settings.redis_url:
                self._redis = redis.Redis.from_url(self.settings.redis_url)
            return self._redis

    @property
    def program(self) -> Program:
        """The program policy: the policy file's, else the defaults (read once)."""
        with self._lock:
            if self._program is None:
                self._program = program_for(self.settings)
            return self._program

    @property
    def caps(self) -> CapCounter | None:
        """The frequency-cap counter, or None without Redis or without cap rules."""
        program = self.program
        client = self.redis
        sessions = self.sessions  # each property takes the lock itself: read them first
        with self._lock:
            if self._caps is None and client is not None and program.caps:
                self._caps = CapCounter(
                    client,
                    self.settings.queue_namespace,
                    program.caps,
                    ledger=ledger_from(sessions),
                    default_time_zone=program.default_time_zone,
                )
            return self._caps

    @property
    def channels(self) -> dict[str, Channel]:
        client = self.redis
        with self._lock:
            if self._channels is None:
                self._channels = build_channels(self.settings, client)
            return self._channels

    def version(self, version_id: int) -> LoadedVersion:
        """The campaign version ``version_id``, parsed once per process.

        Raises:
            LookupError: no such version.
        """
        cached = self._versions.get(version_id)
        if cached is not None:
            return cached
        with self.sessions() as session:
            row = session.execute(
                select(CampaignVersion, Campaign.name)
                .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
                .where(CampaignVersion.id == version_id)
            ).one_or_none()
            if row is None:
                raise LookupError(f"campaign version {version_id} does not exist")
            version, name = row
            loaded = LoadedVersion(
                id=version.id,
                campaign_id=version.campaign_id,
                campaign_name=name,
                version=version.version,
                spec=CampaignSpec.model_validate(version.spec),
                templates=version.templates,
            )
        self._versions[version_id] = loaded
        return loaded

    def close(self) -> None:
        """Close channels and dispose the engine."""
        with self._lock:
            for channel in (self._channels or {}).values():
                channel.close()
            if self._redis is not None:
                self._redis.close()
                self._redis = None
                self._caps = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None
                self._sessions = None
