"""Production mode: a long-running process (worker, HTTP API) refuses to start on the embedded stack's settings.

The defaults of `Settings` are the embedded stack (`make run`): sandbox servers on 127.0.0.1 and secrets published
in this repository. A production deployment that forgot one variable would otherwise run "fine" against nothing,
or with a webhook secret anyone can read here. So unless FULFILL_ENVIRONMENT=embedded says it is the embedded
stack, each process checks first and exits with code 2, listing every problem at once.

The sandbox values are read from the `Settings` field defaults, not copied here: a changed default stays caught.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.config import Settings
from common.crypto.keys import KeyProblem, KeyRing

EXIT_UNSAFE = 2
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# Settings whose default is the sandbox's endpoint: (setting, what it is, what to set instead)
_SANDBOX_ENDPOINTS = [
    ("carrier_api_base", "the sandbox carrier", "the carrier's API URL (EasyPost: https://api.easypost.com/v2)"),
    (
        "threepl_api_base",
        "the sandbox 3PL",
        "the 3PL's API URL with its version (ShipBob: https://api.shipbob.com/2.0)",
    ),
]
# Settings whose default is a secret published in this repository: (setting, what to set instead)
_DEFAULT_SECRETS = [
    ("carrier_api_key", "the carrier's API key"),
    ("carrier_webhook_secret", "the carrier webhook's secret (or empty, to poll tracking without webhooks)"),
    ("twilio_account_sid", "your Twilio account SID"),
    ("twilio_auth_token", "your Twilio auth token"),
    ("threepl_api_token", "the 3PL's API token"),
    ("threepl_webhook_secret", "the 3PL subscription's whsec_ secret"),
]


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def unsafe_settings(settings: Settings) -> list[str]:
    """One sentence per setting that is still the embedded stack's: a sandbox endpoint or a default secret. Empty
    for a production configuration."""
    problems = [*_sandbox_endpoints(settings), *_default_secrets(settings)]
    if _sqlite_under(settings.database_url, settings.var_dir):
        problems.append(
            f"{_var('database_url')} is the embedded stack's SQLite file ({settings.database_url}): "
            "set a PostgreSQL URL (postgresql+asyncpg://...)."
        )
    if settings.picker_enabled:
        problems.append(
            f"{_var('picker_enabled')} is true: the simulated picker confirms every pick task by itself; set it false."
        )
    problems += _codec_keys(settings)
    return problems


def _codec_keys(settings: Settings) -> list[str]:
    """The payload codec's master keys must be production's own, and there."""
    if settings.codec_keys is None and settings.codec_key_file is None:
        return [
            f"{_var('codec_keys')} and {_var('codec_key_file')} are unset, so the payload keys would be the "
            f"embedded stack's file under {settings.var_dir}: mount your key file and set {_var('codec_key_file')} "
            '(README, "Customer data: encryption, keys and erasure").'
        ]
    try:
        KeyRing.load(settings)
    except KeyProblem as err:
        return [f"payload encryption keys: {err}"]
    return []


def _sandbox_endpoints(settings: Settings) -> list[str]:
    problems: list[str] = []
    for name, what, instead in _SANDBOX_ENDPOINTS:
        if getattr(settings, name) == _default(name):
            problems.append(f"{_var(name)} is {what} ({_default(name)}): set {instead}.")
    if settings.twilio_base_url is not None:
        problems.append(
            f"{_var('twilio_base_url')} is set ({settings.twilio_base_url}), so SMS go there instead of Twilio: "
            "set it empty for Twilio."
        )
    sandbox_payments = f"{_default('sandbox_host')}:{_default('sandbox_payments_port')}"
    if settings.stripe_api_base is not None and urlsplit(settings.stripe_api_base).netloc == sandbox_payments:
        problems.append(
            f"{_var('stripe_api_base')} is the sandbox payments server ({settings.stripe_api_base}): "
            "set it empty for Stripe."
        )
    if (settings.smtp_host, settings.smtp_port) == (_default("sandbox_host"), _default("sandbox_smtp_port")):
        problems.append(
            f"{_var('smtp_host')}/{_var('smtp_port')} are the sandbox SMTP server "
            f"({settings.smtp_host}:{settings.smtp_port}): set your SMTP relay."
        )
    for name in ("sms_status_callback_url", "api_public_url"):
        url = getattr(settings, name)
        if url is not None and urlsplit(url).hostname in _LOOPBACK:
            problems.append(
                f"{_var(name)} is on this machine's loopback ({url}), which providers cannot call: "
                "set the HTTP API's public address (or empty, for none)."
            )
    return problems


def _default_secrets(settings: Settings) -> list[str]:
    # The values are not repeated: only that they are the published defaults
    problems = [
        f"{_var(name)} is the sandbox's published default: set {instead}."
        for name, instead in _DEFAULT_SECRETS
        if getattr(settings, name) == _default(name)
    ]
    if settings.stripe_api_key is not None and settings.stripe_api_key == _default("sandbox_payments_api_key"):
        problems.append(f"{_var('stripe_api_key')} is the sandbox payments server's key: set your Stripe key.")
    return problems


def refuse_unsafe_start(settings: Settings, process: str) -> None:
    """In production mode, exit with code 2 (and every problem on stderr) before `process` starts anything, if
    its settings are the embedded stack's. Does nothing with FULFILL_ENVIRONMENT=embedded."""
    if settings.environment == "embedded":
        return
    problems = unsafe_settings(settings)
    if not problems:
        return
    lines = [
        f"{process}: refusing to start in production mode (FULFILL_ENVIRONMENT=production, the default) "
        f"with {len(problems)} setting(s) of the embedded stack:",
        *(f"  - {problem}" for problem in problems),
        "Set these, or set FULFILL_ENVIRONMENT=embedded for the embedded stack (sandbox servers on this machine).",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
    raise SystemExit(EXIT_UNSAFE)


def _var(name: str) -> str:
    return f"FULFILL_{name.upper()}"


def _sqlite_under(url: str, var_dir: Path) -> bool:
    """A SQLite URL whose file lies in the embedded stack's data folder (var/ by default)."""
    scheme, sep, path = url.partition(":///")
    if not sep or not scheme.startswith("sqlite"):
        return False
    file = Path(path.split("?", 1)[0])
    folders = {Path(_default("var_dir")).resolve(), var_dir.resolve()}
    return any(file.resolve().is_relative_to(folder) for folder in folders)
