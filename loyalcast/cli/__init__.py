"""The ``loyalcast`` command line.

Every command reads its configuration from the environment once, through
:class:`loyalcast.settings.Settings`; a malformed variable stops it with a
message naming the variable (exit code 2). ``loyalcast settings`` lists them.

This module only assembles the commands; each group lives in a module of its own:

- :mod:`loyalcast.cli.services`: ``settings``, ``db upgrade``, and the processes
  ``worker``, ``scheduler``, ``run``, ``api`` and ``demo``;
- :mod:`loyalcast.cli.members`: ``members import``, ``enroll`` and ``why``;
- :mod:`loyalcast.cli.segments`: ``segments save``, ``preview`` and ``snapshot``;
- :mod:`loyalcast.cli.campaigns`: ``campaigns create``, ``status``, ``forecast``,
  ``test-send``, ``cancel``, ``pause`` and ``resume``;
- :mod:`loyalcast.cli.deliveries`: ``deliveries retry``;
- :mod:`loyalcast.cli._common`: what they share (the consoles, :func:`fail`,
  loading settings, the program policy and database sessions).
"""

from __future__ import annotations

import typer

from loyalcast.cli import campaigns, deliveries, members, segments, services

__all__ = ["app", "main"]

app = typer.Typer(
    help="loyalcast sends a loyalty program's messages: reminders, welcomes, broadcasts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Registered in the order `loyalcast --help` lists them.
app.add_typer(services.app)  # no name: its commands are loyalcast's own (settings, worker, ...)
app.add_typer(services.db_app, name="db")
app.add_typer(members.app, name="members")
app.add_typer(campaigns.app, name="campaigns")
app.add_typer(deliveries.app, name="deliveries")
app.add_typer(segments.app, name="segments")


def main() -> None:
    """Console-script entry point."""
    app()
