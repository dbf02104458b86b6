"""``loyalcast deliveries``: the delivery ledger (retry failed deliveries)."""

from __future__ import annotations

from typing import Annotated

import typer

from loyalcast.cli._common import console, fail, load_settings, make_sessions

app = typer.Typer(help="The delivery ledger.", no_args_is_help=True)


@app.command("retry")
def deliveries_retry(
    campaign: Annotated[str, typer.Option(help="The campaign whose deliveries to retry.")],
    status: Annotated[
        str, typer.Option(help="Only 'failed' deliveries can be retried.")
    ] = "failed",
    reason: Annotated[
        str | None,
        typer.Option(help="Only those failed with this reason (e.g. retries_exhausted)."),
    ] = None,
) -> None:
    """Send a campaign's failed deliveries again, still once only (same rows, same keys).

    Only deliveries that never reached a provider are retried; ones a provider
    accepted and later reported undelivered went out once and are left alone.
    """
    from workers import close_broker, make_broker
    from workers.retry import retry_failed

    if status != "failed":
        fail("only --status failed can be retried (unknown deliveries may have been sent)")
    settings = load_settings()
    broker = make_broker(settings) if settings.redis_url else None
    try:
        result = retry_failed(make_sessions(settings), campaign, reason=reason, broker=broker)
    except LookupError as exc:
        fail(str(exc))
    finally:
        if broker is not None:
            close_broker(broker)
    console.print(
        f"{result.reopened} failed deliveries of {campaign} will be sent again"
        + (
            f"; {result.left_alone} reported undelivered by a provider were left alone"
            if result.left_alone
            else ""
        )
    )
