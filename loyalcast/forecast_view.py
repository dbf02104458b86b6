"""``loyalcast campaigns forecast`` as Rich tables: outcomes, channels with ETA, sample renders."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from workers.forecast import Forecast

__all__ = ["print_forecast"]

#: Characters of each sample part shown (the JSON output has them whole).
PART_PREVIEW = 120


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def print_forecast(console: Console, result: Forecast) -> None:
    """Print ``result`` for people: what would happen, why, when it would be done."""
    if not result.forecastable:
        console.print(f"[bold]{result.campaign}[/] ({result.kind}): not forecastable")
        console.print(result.reason or "", markup=False)
        return
    at = f"{result.at:%Y-%m-%d %H:%M}Z" if result.at else "now"
    console.print(
        f"[bold]{result.campaign}[/] planned at {at}: {result.audience} members, "
        f"{result.deliveries} deliveries"
    )
    outcomes = Table("status", "reason", "deliveries", title="outcomes")
    for entry in result.to_dict()["outcomes"]:
        reason = entry["reason"] or ""
        if entry["status"] == "deferred" and entry["reason"] in result.deferred_until:
            first, last = result.deferred_until[entry["reason"]]
            reason += f" (until {first:%m-%d %H:%M}Z" + (
                f" to {last:%m-%d %H:%M}Z)" if last != first else ")"
            )
        outcomes.add_row(entry["status"], reason, str(entry["count"]))
    outcomes.add_row("[bold]total[/]", "", str(sum(result.outcomes.values())))
    console.print(outcomes)
    if result.capped_by_rule:
        console.print(
            "capped by rule: "
            + ", ".join(f"{rule} {n}" for rule, n in sorted(result.capped_by_rule.items())),
            markup=False,
        )
    channels = Table("channel", "sent", "mode", "rate", "from", "done by", "takes", title="ETA")
    for eta in result.eta:
        rate = ", ".join(f"{p} {r:g}/s" for p, r in eta.rates.items()) or "no rate"
        channels.add_row(
            eta.channel,
            str(eta.messages),
            "live" if eta.live else "outbox",
            rate,
            f"{eta.starts_at:%m-%d %H:%M:%S}Z",
            f"{eta.finishes_at:%m-%d %H:%M:%S}Z",
            _duration(eta.seconds),
        )
    console.print(channels)
    samples = Table("channel", "member", "to", "message", title="sample renders")
    for channel, renders in sorted(result.samples.items()):
        for sample in renders:
            text = " | ".join(
                f"{part}: {_clip(body)}" for part, body in sample.parts.items() if part != "html"
            )
            samples.add_row(channel, sample.member, sample.to, text)
    console.print(samples)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PART_PREVIEW else flat[: PART_PREVIEW - 1] + "…"
