"""Production mode (common.production): the embedded stack's settings are each named, a production configuration
passes, and `refuse_unsafe_start` exits 2 with every problem (the process itself: tests/integration/
test_production_mode.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.config import Settings
from common.crypto.keys import rotate_key_file
from common.production import EXIT_UNSAFE, refuse_unsafe_start, unsafe_settings
from workers.devstack import with_engine_webhooks, with_sandbox_payments

SANDBOX_ENDPOINTS = {
    "FULFILL_CARRIER_API_BASE",
    "FULFILL_THREEPL_API_BASE",
    "FULFILL_TWILIO_BASE_URL",
    "FULFILL_SMTP_HOST",
    "FULFILL_SMS_STATUS_CALLBACK_URL",
}
DEFAULT_SECRETS = {
    "FULFILL_CARRIER_API_KEY",
    "FULFILL_CARRIER_WEBHOOK_SECRET",
    "FULFILL_TWILIO_ACCOUNT_SID",
    "FULFILL_TWILIO_AUTH_TOKEN",
    "FULFILL_THREEPL_API_TOKEN",
    "FULFILL_THREEPL_WEBHOOK_SECRET",
}
EMBEDDED_STATE = {"FULFILL_DATABASE_URL", "FULFILL_PICKER_ENABLED"}


def production(**update: object) -> Settings:
    """A fully configured production deployment (what deploy/README.md describes)."""
    fields: dict[str, object] = {
        "environment": "production",
        "temporal_address": "fulfill.a1b2c.tmprl.cloud:7233",
        "temporal_api_key": "tcld-key",
        "database_url": "postgresql+asyncpg://fulfill:pw@db.internal:5432/fulfill",
        "smtp_host": "smtp.relay.internal",
        "smtp_port": 587,
        "smtp_username": "fulfill",
        "smtp_password": "relay-pass",
        "twilio_account_sid": "AC0123456789abcdef0123456789abcdef",
        "twilio_auth_token": "live-token",
        "twilio_base_url": None,
        "sms_status_callback_url": "https://fulfill.example.com/v1/webhooks/twilio/status",
        "api_public_url": "https://fulfill.example.com",
        "carrier_api_base": "https://api.easypost.com/v2",
        "carrier_api_key": "EZAK-live",
        "carrier_webhook_secret": "easypost-hook-secret",
        "threepl_api_base": "https://api.shipbob.com/2.0",
        "threepl_api_token": "shipbob-pat",
        "threepl_webhook_secret": "whsec_bGl2ZS1zZWNyZXQ=",
        "payments_provider": "stripe",
        "stripe_api_key": "sk_live_abc",
        "picker_enabled": False,
    }
    fields.update(update)
    return Settings.model_validate(fields)


def named(problems: list[str]) -> set[str]:
    """The variable each problem starts with."""
    return {m.group(0) for p in problems if (m := re.match(r"FULFILL_[A-Z0-9_]+", p))}


def test_the_defaults_name_every_sandbox_endpoint_and_default_secret() -> None:
    problems = unsafe_settings(Settings())
    assert named(problems) == SANDBOX_ENDPOINTS | DEFAULT_SECRETS | EMBEDDED_STATE
    assert len(problems) == len(named(problems))  # one sentence each
    assert all(p.endswith(".") for p in problems)


def test_make_run_settings_are_caught_too() -> None:
    # The payments and webhook URLs `make run` adds on top of the defaults
    settings, _ = with_sandbox_payments(Settings(), {})
    settings, _ = with_engine_webhooks(settings, {})
    assert {"FULFILL_STRIPE_API_BASE", "FULFILL_STRIPE_API_KEY"} <= named(unsafe_settings(settings))


def test_a_production_configuration_has_no_problem() -> None:
    assert unsafe_settings(production()) == []


def test_secrets_are_named_but_not_repeated() -> None:
    defaults = Settings()
    text = "\n".join(unsafe_settings(defaults))
    for secret in (defaults.carrier_api_key, defaults.twilio_auth_token, defaults.threepl_webhook_secret or ""):
        assert secret not in text


@pytest.mark.parametrize(
    ("update", "variable"),
    [
        ({"carrier_api_key": Settings().carrier_api_key}, "FULFILL_CARRIER_API_KEY"),
        ({"twilio_base_url": "http://127.0.0.1:8026"}, "FULFILL_TWILIO_BASE_URL"),
        ({"api_public_url": "http://127.0.0.1:8080"}, "FULFILL_API_PUBLIC_URL"),
        (
            {"sms_status_callback_url": "http://localhost:8080/v1/webhooks/twilio/status"},
            "FULFILL_SMS_STATUS_CALLBACK_URL",
        ),
        ({"stripe_api_base": "http://127.0.0.1:8028"}, "FULFILL_STRIPE_API_BASE"),
        ({"stripe_api_key": Settings().sandbox_payments_api_key}, "FULFILL_STRIPE_API_KEY"),
        ({"smtp_host": "127.0.0.1", "smtp_port": 8025}, "FULFILL_SMTP_HOST"),
        ({"database_url": "sqlite+aiosqlite:///var/fulfill.db"}, "FULFILL_DATABASE_URL"),
        ({"picker_enabled": True}, "FULFILL_PICKER_ENABLED"),
    ],
)
def test_one_embedded_setting_left_is_named(update: dict[str, object], variable: str) -> None:
    assert named(unsafe_settings(production(**update))) == {variable}


def test_sqlite_outside_the_stack_folder_is_not_the_embedded_database(tmp_path: Path) -> None:
    assert unsafe_settings(production(database_url=f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}")) == []
    inside = production(var_dir=tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}")
    assert named(unsafe_settings(inside)) == {"FULFILL_DATABASE_URL"}


def test_refusal_exits_2_listing_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(environment="production")
    with pytest.raises(SystemExit) as stop:
        refuse_unsafe_start(settings, "worker")
    assert stop.value.code == EXIT_UNSAFE == 2
    err = capsys.readouterr().err
    assert err.startswith("worker: refusing to start in production mode")
    for problem in unsafe_settings(settings):
        assert f"  - {problem}\n" in err
    assert "set FULFILL_ENVIRONMENT=embedded for the embedded stack" in err


def test_embedded_or_configured_starts(capsys: pytest.CaptureFixture[str]) -> None:
    refuse_unsafe_start(Settings(environment="embedded"), "worker")
    refuse_unsafe_start(production(), "worker")
    assert capsys.readouterr().err == ""


def test_payload_keys_must_be_productions_own(tmp_path: Path) -> None:
    unset = production(codec_keys=None, codec_key_file=None, environment="production")
    assert any(p.startswith("FULFILL_CODEC_KEYS and FULFILL_CODEC_KEY_FILE are unset") for p in unsafe_settings(unset))
    missing = production(codec_key_file=tmp_path / "none.json", environment="production")
    assert any("no codec key file at" in p for p in unsafe_settings(missing))
    assert not (tmp_path / "none.json").exists()  # production never makes one up
    rotate_key_file(tmp_path / "keys.json")
    assert unsafe_settings(production(codec_key_file=tmp_path / "keys.json", environment="production")) == []
