"""Baseline (i), the worker side: one dramatiq message per recipient, as a team writes first.

Loaded by ``dramatiq bench.baselines.naive_worker`` in the baseline's worker
processes (never by loyalcast's own). Each ``send_one(member_id, version_id,
channels)`` job, on its own:

1. opens its own database session and loads the member, their consents and
   the campaign version (templates and all) by primary key;
2. picks the first channel with an opt-in and an address;
3. renders the template from scratch: a new sandboxed environment, every part
   compiled for this one message (:class:`templates.Renderer` with a fresh
   cache);
4. sends through the same provider SDK clients loyalcast uses (one per
   process, as any team would keep its client), so the HTTP requests are the
   same bytes as ours;
5. inserts one row into ``bench_naive_sends`` and commits.

No batching, no outbox rows before the send, no leases, no rate limiter, no
quiet hours: it is the simple, plausible design the issue measures ours
against, on the same data, the same fakes and the same templates.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from channels import Channel, DeliveryError, Message
from loyalcast.settings import Settings
from store import Campaign, CampaignVersion, Consent, Member, make_engine, utcnow
from templates import Renderer
from workers.campaigns import CampaignSpec
from workers.context import member_context
from workers.runtime import LoadedVersion, build_channels
from workers.unsubscribe import unsubscribe_url

from .naive import ACTOR, QUEUE, SENDS

__all__ = ["broker", "send_one"]

settings = Settings.from_env()
broker = RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq's brokers are untyped
    url=settings.redis_url, namespace=settings.queue_namespace
)
dramatiq.set_broker(broker)

_lock = threading.Lock()
_state: dict[str, Any] = {}


def _engine() -> Engine:
    """One engine per process, made after dramatiq forked."""
    with _lock:
        if "engine" not in _state:
            _state["engine"] = make_engine(settings.effective_database_url)
        engine: Engine = _state["engine"]
        return engine


def _channels() -> dict[str, Channel]:
    with _lock:
        if "channels" not in _state:
            _state["channels"] = build_channels(settings)  # no Redis: no rate limiter
        channels: dict[str, Channel] = _state["channels"]
        return channels


def _address(member: Member, channel: str) -> str | None:
    return member.email if channel == "email" else member.phone if channel == "sms" else None


@dramatiq.actor(actor_name=ACTOR, queue_name=QUEUE, max_retries=0)
def send_one(member_id: int, version_id: int, channels: list[str]) -> None:
    """Send one member their message of campaign version ``version_id``; record the outcome."""
    with Session(_engine()) as session:
        member = session.get(Member, member_id)
        row = session.execute(
            select(CampaignVersion, Campaign.name)
            .join(Campaign, Campaign.id == CampaignVersion.campaign_id)
            .where(CampaignVersion.id == version_id)
        ).one()
        version, campaign_name = row
        consents = {
            c.channel: c.status
            for c in session.scalars(select(Consent).where(Consent.member_id == member_id))
        }
        status, chosen = "suppressed", None
        detail: str | None = "no consented channel"
        provider_id: str | None = None
        if member is not None:
            for channel in channels:
                if consents.get(channel) == "opted_in" and _address(member, channel):
                    chosen = channel
                    break
        if member is not None and chosen is not None:
            spec = CampaignSpec.model_validate(version.spec)
            loaded = LoadedVersion(
                version.id,
                version.campaign_id,
                campaign_name,
                version.version,
                spec,
                version.templates,
            )
            context = member_context(member, loaded, "UTC")
            metadata: dict[str, Any] = {"max_sms_segments": spec.max_sms_segments}
            if chosen == "email" and settings.public_url:
                link = unsubscribe_url(
                    settings.public_url, settings.signing_key(), member.id, chosen
                )
                metadata["unsubscribe_url"] = context["unsubscribe_url"] = link
            template = loaded.template_for(None)
            parts = Renderer(cache_size=8).render(
                ("naive", member_id), template, version.templates[template], chosen, context
            )
            message = Message(
                delivery_id=member_id,
                dedupe_key=f"naive:{version_id}:{member_id}",
                member_id=member_id,
                channel=chosen,
                to=str(_address(member, chosen)),
                parts=parts,
                category=spec.category,
                campaign=campaign_name,
                metadata=metadata,
            )
            try:
                receipt = _channels()[chosen].send_batch([message])[0]
            except DeliveryError as exc:  # a channel's send_batch returns errors; be safe
                receipt = exc
            if isinstance(receipt, DeliveryError):
                status, detail = "failed", str(receipt)
            else:
                status, detail, provider_id = "sent", None, receipt.provider_message_id
        session.execute(
            insert(SENDS).values(
                member_id=member_id,
                channel=chosen,
                status=status,
                detail=detail,
                provider_message_id=provider_id,
                at=utcnow(),
            )
        )
        session.commit()
