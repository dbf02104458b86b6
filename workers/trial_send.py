"""A test send: one campaign's message, rendered for one member, sent to them alone.

``loyalcast campaigns test-send FILE --to MEMBER`` validates the file and its
templates as ``campaigns create`` does, picks the member's channel by consent
and reachability, renders, and sends through the live channel (or the
outbox). It is outside frequency caps and quiet hours, writes nothing to the
ledger and does not count towards caps; the message is marked: ``[TEST]``
before the SMS text, email subject and push title, and ``test`` in its
metadata (the outbox line says so). For a welcome sequence, ``step`` picks
the step (0 for the first).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select

from channels import Message, Outcome
from store import Member
from templates import TemplateError

from .campaigns import CampaignFileError, Problem, parse_campaign
from .catalog import load_campaign_templates
from .context import member_context, sample_extras, trigger_context
from .policy import Skip, load_reachability, route
from .runtime import LoadedVersion, Runtime
from .unsubscribe import unsubscribe_url

__all__ = ["TEST_MARK", "TrialRefused", "send_trial"]

TEST_MARK = "[TEST] "
_MARKED_PARTS = {("sms", "text"), ("email", "subject"), ("push", "title")}


class TrialRefused(ValueError):
    """The member cannot receive this campaign on any of its channels (consent, reachability)."""


def send_trial(
    rt: Runtime,
    path: Path,
    member: str,
    *,
    template_path: Sequence[Path] = (),
    step: int = 0,
) -> tuple[Message, Outcome]:
    """Render ``path``'s campaign for ``member`` (external id) and send it; return what happened.

    Raises:
        CampaignFileError: the file or a template is wrong.
        LookupError: no such member.
        TrialRefused: no consented, reachable channel.
    """
    source = str(path)
    spec = parse_campaign(
        path.read_text(encoding="utf-8"), source, attributes=rt.program.attributes
    )
    templates = load_campaign_templates(spec, [*template_path, path.parent / "templates"], source)
    payload = {"step": step} if spec.steps else None
    if spec.steps and not 0 <= step < len(spec.steps):
        raise CampaignFileError(
            source, [Problem("steps", f"no step {step + 1}: the sequence has {len(spec.steps)}")]
        )
    template = LoadedVersion(0, 0, spec.name, 0, spec, templates).template_for(payload)
    channels = spec.step_channels(spec.steps[step]) if spec.steps else spec.channel_list
    with rt.sessions() as session:
        found = session.scalar(select(Member).where(Member.external_id == member))
        if found is None:
            raise LookupError(f"no member with external id {member!r}")
        consents, tokens = load_reachability(session, [found.id])
        session.expunge_all()
    decision = route(found, consents[found.id], tokens[found.id], channels, spec.category)
    if isinstance(decision, Skip):
        raise TrialRefused(f"{member} cannot receive {spec.name}: {decision.detail}")
    version = LoadedVersion(0, 0, spec.name, 0, spec, templates)
    zone = found.time_zone or rt.program.default_time_zone
    context = {
        **member_context(found, version, rt.program.default_time_zone),
        # A sequence's step number is the one asked for, not the first using the template.
        **(trigger_context(spec, payload) if payload else sample_extras(spec, template)),
    }
    metadata = {"test": True, "time_zone": zone, **decision.metadata}
    if decision.channel == "email" and rt.settings.public_url:
        link = unsubscribe_url(rt.settings.public_url, rt.signing_key, found.id, "email")
        metadata["unsubscribe_url"] = context["unsubscribe_url"] = link
    try:
        parts = rt.renderer.render(
            f"test:{uuid.uuid4()}", template, templates[template], decision.channel, context
        )
    except TemplateError as exc:
        raise CampaignFileError(source, [Problem(f"template {exc.template}", str(exc))]) from None
    parts = {
        name: TEST_MARK + text if (decision.channel, name) in _MARKED_PARTS else text
        for name, text in parts.items()
    }
    message = Message(
        delivery_id=0,
        dedupe_key=f"test:{uuid.uuid4().hex}",
        member_id=found.id,
        channel=decision.channel,
        to=decision.to,
        parts=parts,
        category=spec.category,
        campaign=spec.name,
        metadata=metadata,
    )
    [outcome] = rt.channels[decision.channel].send_batch([message])
    return replace(message), outcome
