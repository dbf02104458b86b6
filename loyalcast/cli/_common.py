"""What every command shares: the two consoles, and loading settings, policy and sessions."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console

from loyalcast.logging import configure_logging
from loyalcast.settings import Settings, SettingsError

console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    errors.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """The settings from the environment, or exit 2 naming the bad variable.

    The program policy file (LOYALCAST_POLICY_FILE) is validated here too, so a
    mistake in it stops every command at start with its line and key.
    """
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        fail(f"configuration: {exc}", code=2)
    configure_logging(settings.log_level)
    load_program(settings)
    return settings


def load_program(settings: Settings) -> Any:
    """The program policy in force, or exit 2 naming the file, line and key at fault."""
    from workers.program import ProgramFileError
    from workers.runtime import program_for

    try:
        return program_for(settings)
    except (ProgramFileError, OSError) as exc:
        fail(f"policy file refused:\n{exc}", code=2)


def warn_rules_not_allowed(settings: Settings) -> None:
    """Print a warning for each running campaign's rule the policy file no longer allows."""
    from workers.campaign_checks import rules_not_allowed

    found = rules_not_allowed(make_sessions(settings), load_program(settings))
    for problem in found:
        errors.print(
            f"warning: {problem}: the program no longer allows this rule; until it does, "
            "the campaign's runs fail to plan and its rows fail (rule_error). Declare the "
            "attribute again, or update the campaign, then `loyalcast campaigns replan NAME` "
            "(and `loyalcast deliveries retry --campaign NAME --reason rule_error`)",
            markup=False,
        )


def make_sessions(settings: Settings, upgrade: bool = True) -> Any:
    """A sessionmaker on the configured database, its schema upgraded first unless told not."""
    from store import make_engine, make_sessionmaker
    from store import upgrade as upgrade_schema

    engine = make_engine(settings.effective_database_url)
    if upgrade:
        upgrade_schema(engine)
    return make_sessionmaker(engine)


def print_channels(settings: Settings) -> None:
    """Say which channels are live and which write to the outbox."""
    from loyalcast.embedded import channel_lines

    for line in channel_lines(settings):
        console.print(f"  {line}", markup=False)
