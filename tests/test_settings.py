"""Settings: read once from the environment; a malformed value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from loyalcast.settings import Settings, SettingsError, redact_url


def test_no_configuration_means_the_embedded_default():
    """With nothing set: SQLite under ./.loyalcast, no shared Redis, outbox under the data dir."""
    settings = Settings.from_env({})
    assert settings.redis_url is None
    assert (
        settings.effective_database_url == f"sqlite:///{Path('.loyalcast/loyalcast.db').resolve()}"
    )
    assert settings.effective_outbox_dir == Path(".loyalcast/outbox")


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("LOYALCAST_DATABASE_URL", "mysql://x", "must be a sqlite:/// or postgresql:// URL"),
        ("LOYALCAST_REDIS_URL", "http://localhost", "must be a redis://, rediss:// or unix:// URL"),
        ("LOYALCAST_BATCH_SIZE", "lots", "invalid literal for int()"),
        ("LOYALCAST_BATCH_SIZE", "0", "must be a positive integer"),
        ("LOYALCAST_LEASE_SECONDS", "-5", "must be a positive number"),
        ("LOYALCAST_DEFAULT_TIMEZONE", "Mars/Olympus", "unknown IANA time zone 'Mars/Olympus'"),
        ("LOYALCAST_DEFAULT_REGION", "USA", "must be a two-letter ISO country code"),
        ("LOYALCAST_LOG_LEVEL", "LOUD", "must be DEBUG, INFO, WARNING or ERROR"),
    ],
)
def test_a_malformed_value_names_the_variable(variable, value, problem):
    """The error starts with the variable's name and says what is wrong."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env({variable: value})
    assert str(info.value).startswith(f"{variable}: ")
    assert problem in str(info.value)


def test_postgresql_urls_get_the_psycopg_driver():
    """postgresql:// and postgres:// URLs use psycopg 3."""
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert (
            Settings.from_env({"LOYALCAST_DATABASE_URL": url}).database_url
            == "postgresql+psycopg://u@h/db"
        )


def test_settings_round_trip_through_a_child_environment():
    """to_env() gives a child process the same settings."""
    settings = Settings.from_env(
        {"LOYALCAST_BATCH_SIZE": "250", "LOYALCAST_REDIS_URL": "redis://h:6379/2"}
    )
    assert Settings.from_env(settings.to_env()) == settings


def test_passwords_are_redacted_from_urls():
    """URLs shown to people never carry the password."""
    assert (
        redact_url("postgresql+psycopg://app:s3cret@db:5432/x")
        == "postgresql+psycopg://app:***@db:5432/x"
    )
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_readme_documents_every_variable():
    """The README's configuration table names every variable Settings reads."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [env for env, _, _ in Settings.documented() if f"| `{env}` |" not in readme]
    assert missing == []


def test_the_demo_never_goes_live_even_with_credentials_in_the_environment(monkeypatch):
    """Provider credentials in the environment do not reach the demo or its workers."""
    from loyalcast.demo import demo_settings
    from loyalcast.embedded import channel_lines, child_env

    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "live-token")
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.live")
    settings = demo_settings(
        Settings.from_env(
            {
                "TWILIO_ACCOUNT_SID": "AC1",
                "TWILIO_AUTH_TOKEN": "live-token",
                "TWILIO_FROM_NUMBER": "+15005550006",
                "SENDGRID_API_KEY": "SG.live",
                "SENDGRID_FROM_EMAIL": "a@example.com",
            }
        )
    )
    assert all("outbox" in line for line in channel_lines(settings))
    env = child_env(settings, "unix:///tmp/demo.sock")
    assert "TWILIO_AUTH_TOKEN" not in env
    assert "SENDGRID_API_KEY" not in env


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_FROM_NUMBER": "+15005550006"}, "TWILIO_AUTH_TOKEN"),
        ({"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"}, "TWILIO_FROM_NUMBER"),
        ({"SENDGRID_API_KEY": "SG.x"}, "SENDGRID_FROM_EMAIL"),
        ({"FCM_PROJECT_ID": "p"}, "GOOGLE_APPLICATION_CREDENTIALS"),
        ({"VAPID_PRIVATE_KEY": "k"}, "VAPID_SUBJECT"),
    ],
)
def test_a_half_configured_provider_is_refused_naming_what_is_missing(environ, variable):
    """Credentials set halfway stop the start instead of silently using the outbox."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ)
    assert info.value.variable == variable
