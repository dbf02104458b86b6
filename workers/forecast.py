"""Forecast a campaign: what its run would do, decided as the deliver job decides, sending nothing.

``loyalcast campaigns forecast FILE`` and ``POST /campaigns/forecast`` call
:func:`forecast`. For a broadcast it streams the audience in the planner's
pages (keyset on member id; never the whole audience in memory) and, for each
delivery the run would write, decides at the moment the row would be sent
(the run's due time, or the member's own instant for ``timezone: member``)
with the deliver job's own code:

- :func:`workers.compose.compose`: channel by consent and reachability
  (:func:`workers.policy.route`), quiet hours (deferred), the real renderer
  (a template error fails that member's delivery, as in the run);
- frequency caps through :class:`workers.cap_preview.CapPreview`, which reads
  the members' counters and holds the forecast's own reservations in memory,
  so a member capped mid-forecast is counted as the run would count them;
- one direct-mail piece per household, and a live Twilio channel's refusal of
  an SMS longer than ``max_sms_segments`` (which gives its cap slot back).

Whatever the run would send is counted ``sent``: a forecast cannot know a
provider's answer. It writes nothing to the store and nothing to Redis.

The ETA per channel comes from the configured provider rates
(``LOYALCAST_TWILIO_RATE`` and the others): messages leave each provider's
bucket from their send instant at that rate; push splits between FCM and Web
Push, which have buckets of their own. Direct mail has no rate (a file drop).
It is computed from the configured rates even for a channel in outbox mode
(where nothing waits), so it says what the same run would take once live.

Kinds other than broadcast are reported as not forecastable, with the reason:
their audience is decided day by day (expiry reminders), by future
enrollments (welcome sequences) or by who enters a segment later (triggered).
"""

from __future__ import annotations

import itertools
import zoneinfo
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from channels import Message
from channels.direct_mail import household_key
from channels.sms_segments import count_segments
from segments import Rule, audience_filter, load_segment, parse_rule
from store import CampaignStatus, Delivery, DeliveryStatus, Member, utcnow

from .campaign_checks import (
    ValidatedCampaign,
    read_campaign_file,
    validate_campaign,
)
from .cap_preview import CapPreview
from .capping import _request
from .caps import Capped
from .compose import Closed, Deferred, compose
from .forecast_report import ChannelEta, Forecast, SampleRender, eta_for
from .planning import dedupe_key
from .policy import load_reachability
from .runtime import LoadedVersion, Runtime
from .timing import RunTiming, row_timing

__all__ = ["ChannelEta", "Forecast", "SampleRender", "forecast"]

#: Sample renders shown per channel.
SAMPLES_PER_CHANNEL = 3

#: Ids for forecasts' unstored versions and rows: negative, never a real row's.
_ids = itertools.count(1)

_NOT_FORECASTABLE = {
    "expiry_reminder": "an expiry reminder's audience is decided each day from the points "
    "then expiring; forecasting it is not supported yet",
    "welcome_sequence": "a welcome sequence sends to members as they enroll; "
    "its audience is not known in advance",
    "triggered": "a triggered campaign sends to members as they enter its segment; "
    "its audience is not known in advance",
}


def forecast(
    rt: Runtime,
    campaign: Path | ValidatedCampaign,
    *,
    at: datetime | None = None,
    template_path: Sequence[Path] = (),
) -> Forecast:
    """What a run of ``campaign`` would do at ``at`` (default: when it falls due).

    Args:
        rt: the runtime whose store, program policy, caps and channels the run would use.
        campaign: a campaign file (validated as ``campaigns create`` validates it),
            or a campaign already validated.
        at: the instant the run is planned; by default the schedule's due time
            (now when that is past or there is no schedule; the next occurrence for cron).
        template_path: folders of template folders, searched before the built-ins.

    Raises:
        CampaignFileError: the file, a template, or a sample render is wrong.
        ValueError: ``at`` is not an aware instant.
    """
    if at is not None and at.utcoffset() is None:
        raise ValueError("at must carry a UTC offset, e.g. 2026-12-01T10:00:00+00:00")
    if isinstance(campaign, Path):
        campaign = validate_campaign(
            rt.sessions,
            read_campaign_file(campaign),
            str(campaign),
            template_path=[*template_path, campaign.parent / "templates"],
            program=rt.program,
        )
    spec = campaign.spec
    now = utcnow()
    if spec.kind != "broadcast":
        return Forecast.not_forecastable(spec.name, spec.kind, _NOT_FORECASTABLE[spec.kind])
    plan_at, problem = _plan_instant(spec, at, now)
    if plan_at is None:
        return Forecast.not_forecastable(spec.name, spec.kind, problem or "")
    version = LoadedVersion(-next(_ids), 0, spec.name, 0, spec, campaign.templates)
    return _Broadcast(rt, version, plan_at).run()


def _plan_instant(
    spec: Any, at: datetime | None, now: datetime
) -> tuple[datetime | None, str | None]:
    """When the run would be planned, or why that cannot be said."""
    schedule = spec.schedule
    if at is not None:
        return at, None
    if schedule is None:
        return now, None
    if not schedule.recurring:
        return max(schedule.due_at(), now), None
    if schedule.member_local:
        return None, (
            "a member-local cron recurrence is not forecastable yet; "
            "pass an instant (--at) to forecast one occurrence"
        )
    trigger = CronTrigger.from_crontab(schedule.cron, timezone=zoneinfo.ZoneInfo(schedule.timezone))
    following = trigger.get_next_fire_time(None, now)
    if following is None or (schedule.until is not None and following > schedule.until):
        return None, "the cron recurrence has no occurrence left"
    return following, None


@dataclass
class _Tally:
    outcomes: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    capped_by_rule: Counter[str] = field(default_factory=Counter)
    deferred_until: dict[str, list[datetime]] = field(default_factory=dict)
    samples: dict[str, list[SampleRender]] = field(default_factory=lambda: defaultdict(list))
    leaving: dict[tuple[str, str | None], Counter[datetime]] = field(
        default_factory=lambda: defaultdict(Counter)
    )
    audience: int = 0
    deliveries: int = 0

    def defer(self, reason: str, until: datetime) -> None:
        self.outcomes[(DeliveryStatus.DEFERRED.value, reason)] += 1
        span = self.deferred_until.setdefault(reason, [until, until])
        span[0], span[1] = min(span[0], until), max(span[1], until)


class _Broadcast:
    """One broadcast forecast: the audience page by page, each row as the deliver job sees it."""

    def __init__(self, rt: Runtime, version: LoadedVersion, plan_at: datetime) -> None:
        self.rt = rt
        self.version = version
        self.spec = version.spec
        self.plan_at = plan_at
        schedule = version.spec.schedule
        wall = schedule.at.replace(tzinfo=None) if schedule and schedule.at else None
        self._timing = RunTiming(0, plan_at, wall)
        self.tally = _Tally()
        counter = rt.caps
        self.caps = CapPreview(counter) if counter is not None else None
        self.households: set[str] = set()
        sms = rt.channels.get("sms")
        self.sms_checked = bool(sms is not None and sms.live and hasattr(sms, "max_segments"))
        self.notes: list[str] = []
        self.external_ids: dict[int, str] = {}

    def run(self) -> Forecast:
        spec = self.spec
        attributes = self.rt.program.attributes
        segment = spec.segment
        rule: Rule | None
        if isinstance(segment, str):
            with self.rt.sessions() as session:
                _, rule = load_segment(session, segment, attributes=attributes)
        else:
            rule = parse_rule(segment, "segment", attributes=attributes) if segment else None
        audience = audience_filter(rule, now=self.plan_at)
        channels = spec.channel_list
        per_channel = spec.sends_on_every_channel
        page = self.rt.settings.batch_size
        page = max(page // len(channels) if per_channel else page, 1)
        last = 0
        while True:
            with self.rt.sessions() as session:
                members = list(
                    session.scalars(
                        select(Member)
                        .where(audience, Member.id > last)
                        .order_by(Member.id)
                        .limit(page)
                    )
                )
                if not members:
                    break
                last = members[-1].id
                sendable = self._compose_page(session, members, channels, per_channel)
                if self.caps is not None:
                    self.caps.load(
                        session,
                        [(_request(m), when) for items in sendable.values() for m, when in items],
                    )
            for channel, items in sendable.items():
                for message, when in items:
                    self._send(channel, message, when)
        if self.caps is not None and self.caps.problem:
            self.notes.append(self.caps.problem)
        if self.caps is None and self.rt.program.caps:
            self.notes.append(
                "frequency caps not counted: no Redis is configured (LOYALCAST_REDIS_URL), "
                "and a run without one does not apply them either"
            )
        return self._result()

    def _compose_page(
        self, session: Any, members: list[Member], channels: list[str], per_channel: bool
    ) -> dict[str, list[tuple[Message, datetime]]]:
        """Compose the page's rows as the deliver job would; return what reaches the caps."""
        ids = [m.id for m in members]
        consents, tokens = load_reachability(session, ids)
        tally = self.tally
        self.external_ids = {m.id: m.external_id for m in members}
        sendable: dict[str, list[tuple[Message, datetime]]] = {}
        for member in members:
            tally.audience += 1
            deferral = row_timing(
                self.spec.schedule,
                self._timing,
                member.id,
                member.time_zone,
                self.rt.program.default_time_zone,
                self.plan_at,
            )
            when = deferral.get("not_before") or self.plan_at
            for channel_set in [[c] for c in channels] if per_channel else [channels]:
                tally.deliveries += 1
                row = Delivery(
                    id=-next(_ids),
                    campaign_id=0,
                    campaign_version_id=self.version.id,
                    run_id=None,
                    member_id=member.id,
                    dedupe_key=dedupe_key(0, member.id, channel_set[0] if per_channel else None),
                    channels=",".join(channel_set),
                    category=self.spec.category,
                    payload=None,
                )
                outcome = compose(
                    self.rt,
                    row,
                    member,
                    consents[member.id],
                    tokens[member.id],
                    CampaignStatus.ACTIVE,
                    when,
                    version=self.version,
                )
                if isinstance(outcome, Deferred):
                    tally.defer(outcome.reason, outcome.until)
                elif isinstance(outcome, Closed):
                    tally.outcomes[(outcome.status.value, outcome.reason)] += 1
                else:
                    sendable.setdefault(outcome.channel, []).append((outcome, when))
        return sendable

    def _send(self, channel: str, message: Message, when: datetime) -> None:
        """The rest of the deliver job for one message: caps, household, provider checks."""
        tally = self.tally
        request = _request(message)
        if self.caps is not None:
            decided = self.caps.reserve(request, when)
            if isinstance(decided, Capped):
                tally.outcomes[(DeliveryStatus.SUPPRESSED.value, decided.reason)] += 1
                tally.capped_by_rule[decided.rule.name] += 1
                return
        if channel == "direct_mail" and "address" in message.metadata:
            key = household_key(message.metadata["address"])
            if key in self.households:
                tally.outcomes[(DeliveryStatus.SUPPRESSED.value, "household")] += 1
                return
            self.households.add(key)
        if channel == "sms" and self.sms_checked and self._refused_sms(message):
            tally.outcomes[(DeliveryStatus.FAILED.value, "permanent")] += 1
            if self.caps is not None:
                self.caps.release(request, when)
            return
        tally.outcomes[(DeliveryStatus.SENT.value, None)] += 1
        tally.sent[channel] += 1
        provider = _provider(message)
        tally.leaving[(channel, provider)][when] += 1
        if len(tally.samples[channel]) < SAMPLES_PER_CHANNEL:
            tally.samples[channel].append(
                SampleRender(
                    member=self.external_ids.get(message.member_id, str(message.member_id)),
                    to=message.to,
                    sent_at=when,
                    parts=dict(message.parts),
                )
            )

    def _refused_sms(self, message: Message) -> bool:
        """Whether the live SMS channel refuses the text before calling Twilio."""
        text = message.parts.get("text", "")
        allowed = int(message.metadata.get("max_sms_segments", self.spec.max_sms_segments))
        return not text or count_segments(text).segments > allowed

    def _result(self) -> Forecast:
        tally = self.tally
        live = {name: channel.live for name, channel in self.rt.channels.items()}
        etas = [
            eta_for(channel, leaving, self.rt.settings, live.get(channel, False))
            for channel, leaving in _by_channel(tally.leaving).items()
        ]
        return Forecast(
            campaign=self.spec.name,
            kind=self.spec.kind,
            forecastable=True,
            reason=None,
            at=self.plan_at,
            audience=tally.audience,
            deliveries=tally.deliveries,
            outcomes=dict(tally.outcomes),
            channels=dict(tally.sent),
            capped_by_rule=dict(tally.capped_by_rule),
            deferred_until={k: (v[0], v[1]) for k, v in tally.deferred_until.items()},
            samples=dict(tally.samples),
            eta=etas,
            notes=self.notes,
        )


def _provider(message: Message) -> str | None:
    """Which provider's rate bucket a message leaves through (None: no rate)."""
    if message.channel == "push":
        return "fcm" if message.metadata.get("push_kind", "fcm") == "fcm" else "webpush"
    return {"sms": "twilio", "email": "sendgrid"}.get(message.channel)


def _by_channel(
    leaving: dict[tuple[str, str | None], Counter[datetime]],
) -> dict[str, dict[str | None, Counter[datetime]]]:
    grouped: dict[str, dict[str | None, Counter[datetime]]] = defaultdict(dict)
    for (channel, provider), instants in sorted(leaving.items(), key=lambda kv: str(kv[0])):
        grouped[channel][provider] = instants
    return grouped
