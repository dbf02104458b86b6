"""Baseline (ii): the raw limit, a tight loop of the same HTTP requests straight to the fakes.

:func:`build_requests` turns a campaign's messages to given members into the
HTTP requests the provider SDKs send for them: each message composed as the
deliver job composes it (:func:`workers.compose.compose`: policy, template,
unsubscribe link), the same SendGrid JSON body (built by the SendGrid
channel's own request builder) and the same Twilio form. Building happens
before the clock starts.

:func:`measure_raw` then runs :mod:`bench.baselines.raw_loop` on them in a
process of its own, so it does not share a GIL with the fakes, which run in
the bench process.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select

from channels import Message
from channels.fakes.twilio import API_VERSION
from channels.sendgrid_body import build_mail, prepare, requests_for
from loyalcast.settings import Settings
from store import CampaignStatus, Delivery, Member, utcnow
from workers.compose import compose
from workers.policy import load_reachability
from workers.runtime import Runtime

from ..environment import REPO_ROOT, BenchEnv
from ..meters import recipient_key

__all__ = ["RawRun", "build_requests", "expected_recipients", "measure_raw"]


class RawRun(dict[str, Any]):
    """The loop's JSON answer: ``requests``, ``ok``, ``messages``, ``seconds``, ``errors``."""

    @property
    def throughput(self) -> float:
        """Messages (recipients of accepted requests) per second."""
        return float(self["messages"]) / float(self["seconds"]) if self["seconds"] else 0.0


def _twilio_request(settings: Settings, message: Message) -> dict[str, Any]:
    sid = settings.twilio_account_sid or ""
    token = settings.twilio_auth_token or ""
    form = {"To": message.to, "Body": message.parts["text"], "From": settings.twilio_from_number}
    if settings.public_url:
        form["StatusCallback"] = f"{settings.public_url}/webhooks/twilio/status"
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    return {
        "recipients": [recipient_key("sms", message.to)],
        "url": f"{settings.twilio_base_url}/{API_VERSION}/Accounts/{sid}/Messages.json",
        "headers": {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": "bench-raw-http",
        },
        "body": urlencode(form),
    }


def _sendgrid_requests(
    settings: Settings, messages: Sequence[Message], batch_size: int
) -> list[dict[str, Any]]:
    """The mail/send requests the SendGrid channel makes for ``messages``.

    Cut into deliver batches of ``batch_size`` as the planner cuts them, then
    grouped by the channel's own :func:`channels.sendgrid_body.requests_for`
    and built by its :func:`~channels.sendgrid_body.build_mail`: the bodies
    are the bytes our workers send.
    """
    sender = settings.sendgrid_from_email or "bench@example.com"
    requests = []
    for start in range(0, len(messages), batch_size):
        items = [prepare(m) for m in messages[start : start + batch_size]]
        for indexes in requests_for(items):
            group = [items[i] for i in indexes]
            requests.append(
                {
                    "recipients": [recipient_key("email", i.message.to) for i in group],
                    "url": f"{settings.sendgrid_api_host}/v3/mail/send",
                    "headers": {
                        "Authorization": f"Bearer {settings.sendgrid_api_key}",
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                        "User-Agent": "bench-raw-http",
                    },
                    "body": json.dumps(build_mail(group, sender)),
                }
            )
    return requests


def build_requests(
    env: BenchEnv, settings: Settings, version_id: int, member_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """The HTTP requests of campaign version ``version_id``'s messages to ``member_ids``.

    Each member's message is composed as the deliver job composes it (policy,
    context, rendering, unsubscribe link); members the policy skips get none.
    """
    rt = Runtime(settings)
    now = utcnow()
    try:
        version = rt.version(version_id)
        ids = list(member_ids)
        with env.sessions() as session:
            members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(ids)))}
            consents, tokens = load_reachability(session, ids)
            session.expunge_all()
        requests: list[dict[str, Any]] = []
        emails: list[Message] = []
        for member_id in ids:
            row = Delivery(
                id=member_id,
                dedupe_key=f"raw:{version_id}:{member_id}",
                campaign_id=version.campaign_id,
                campaign_version_id=version_id,
                run_id=None,
                member_id=member_id,
                category=version.spec.category,
                channels=",".join(version.spec.channel_list),
                payload=None,
            )
            message = compose(
                rt,
                row,
                members.get(member_id),
                consents[member_id],
                tokens[member_id],
                CampaignStatus.ACTIVE,
                now,
            )
            if not isinstance(message, Message):
                continue  # suppressed by policy: no request
            if message.channel == "email":
                emails.append(message)
            elif message.channel == "sms":
                requests.append(_twilio_request(settings, message))
            else:
                raise RuntimeError(f"the raw baseline has no request for {message.channel}")
        return requests + _sendgrid_requests(settings, emails, env.options.batch_size)
    finally:
        rt.close()


def expected_recipients(requests: Sequence[dict[str, Any]]) -> Counter[str]:
    """The recipients ``requests`` address, as :func:`bench.meters.check_intake` compares them."""
    return Counter(str(key) for r in requests for key in r["recipients"])


def measure_raw(env: BenchEnv, requests: Sequence[dict[str, Any]], name: str) -> RawRun:
    """Run the raw loop over ``requests`` in a process of its own; return its answer."""
    path = env.work_dir / f"raw-{name}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for request in requests:
            fh.write(json.dumps(request) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.baselines.raw_loop", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the raw HTTP loop failed: {done.stderr.strip()[-2000:]}")
    return RawRun(json.loads(done.stdout))
