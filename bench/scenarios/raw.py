"""The raw HTTP baseline on its own: the fakes' limit, without running a broadcast.

For each campaign kind of :data:`bench.scenarios.broadcast.KINDS` the
campaign is created with a schedule a year ahead (so no tick ever runs it),
its messages to the first ``--baseline-limit`` members are composed, and
:func:`bench.baselines.raw_http.measure_raw` sends their requests in a tight
loop. The broadcast scenario runs the same loop after its own runs; this
one is the smallest path through the framework and what the smoke test runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from channels.fakes.sendgrid import FakeSendGrid
from channels.fakes.twilio import FakeTwilio
from store import CampaignVersion, utcnow
from workers.catalog import create_campaign
from workers.runtime import program_for

from ..baselines.raw_http import build_requests, expected_recipients, measure_raw
from ..environment import BenchEnv
from ..meters import FakeMeter, check_intake
from ..ours import write_campaign
from ..report import ScenarioResult
from .broadcast import KINDS

__all__ = ["run"]


def run(env: BenchEnv, kinds: Sequence[str] = tuple(KINDS)) -> ScenarioResult:
    """Time the raw request loop for each of ``kinds``."""
    limit = env.options.baseline_limit
    result = ScenarioResult("raw", f"raw HTTP limit: the first {limit:,} members' requests")
    sendgrid = FakeSendGrid(validate_every=env.options.validate_every)
    twilio = FakeTwilio(validate_every=env.options.validate_every)
    sendgrid.start()
    twilio.start()
    try:
        settings = env.provider_settings(twilio_url=twilio.url, sendgrid_url=sendgrid.url)
        later = f'schedule: {{at: "{utcnow().year + 1}-06-01T10:00", timezone: UTC}}\n'
        members = env.audience(limit)
        with FakeMeter([sendgrid, twilio]) as meter:
            for kind in kinds:
                path = write_campaign(env, f"raw-{kind}", KINDS[kind], extra=later)
                created = create_campaign(env.sessions, path, program=program_for(settings))
                with env.sessions() as session:
                    version_id = session.scalar(
                        select(CampaignVersion.id).where(
                            CampaignVersion.campaign_id == created.campaign_id,
                            CampaignVersion.version == created.version,
                        )
                    )
                assert version_id is not None
                requests = build_requests(env, settings, version_id, members)
                meter.reset()
                raw = measure_raw(env, requests, kind)
                if raw["ok"] != len(requests) or raw["errors"]:
                    raise AssertionError(f"raw {kind}: {raw}")
                check_intake(f"raw {kind}", meter.snapshot(), expected_recipients(requests))
                row = result.row(f"raw {kind}")
                row.add("members", len(members), "count")
                row.add("requests", raw["requests"], "count")
                row.add("messages", raw["messages"], "count")
                row.add("seconds", raw["seconds"], "s")
                row.add("msgs/s", raw.throughput, "msg/s")
    finally:
        sendgrid.stop()
        twilio.stop()
    result.notes.append(
        f"one process, one thread, one connection per request (SendGrid's carry up to 1000"
        f" messages each); the fakes validate 1 request"
        f" in {env.options.validate_every} against the providers' OpenAPI specs (sampled)"
    )
    return result
