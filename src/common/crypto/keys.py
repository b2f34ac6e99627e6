"""The master keys that encrypt every payload the engine hands Temporal (AES-256-GCM), and their rotation.

Keys come from `FULFILL_CODEC_KEYS` ("id:base64key,id:base64key", newest first) or, unset, from a key file
(`FULFILL_CODEC_KEY_FILE`, default `<var_dir>/codec-keys.json`): `{"keys": [{"id", "key", "created_at"}]}`,
newest first. New payloads use the newest key; every key listed still decrypts, so a key is retired only once
no history needs it (the namespace's retention, after `fulfill keys rewrap`).

The embedded stack creates its key file at first use; production never does (a missing key is a refusal).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.config import Settings

KEY_BYTES = 32  # AES-256
KEY_FILE_NAME = "codec-keys.json"


class KeyProblem(ValueError):
    """The codec keys cannot be used as configured: the message names the setting or file and what is wrong."""


@dataclass(frozen=True)
class MasterKey:
    id: str
    secret: bytes
    created_at: str | None = None

    def __repr__(self) -> str:  # never the secret
        return f"MasterKey({self.id!r})"


def key_file(settings: Settings) -> Path:
    return settings.codec_key_file or settings.var_dir / KEY_FILE_NAME


def new_key(now: datetime | None = None) -> MasterKey:
    now = now or datetime.now(UTC)
    return MasterKey(
        id=f"k{now:%Y%m%d}-{secrets.token_hex(3)}",
        secret=secrets.token_bytes(KEY_BYTES),
        created_at=now.isoformat(timespec="seconds"),
    )


class KeyRing:
    """The master keys, newest first. `reload()` reads them again (a key file another process rotated)."""

    def __init__(self, keys: list[MasterKey], *, source: Path | None = None) -> None:
        if not keys:
            raise KeyProblem("no codec key: set FULFILL_CODEC_KEYS or FULFILL_CODEC_KEY_FILE")
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise KeyProblem(f"codec key ids repeat: {', '.join(ids)}")
        self.keys = keys
        self._by_id = {k.id: k for k in keys}
        self._source = source

    @property
    def newest(self) -> MasterKey:
        return self.keys[0]

    def get(self, key_id: str) -> MasterKey | None:
        return self._by_id.get(key_id)

    def reload(self) -> bool:
        """Read the key file again; True if it now holds keys this ring did not have."""
        if self._source is None or not self._source.exists():
            return False
        fresh = read_key_file(self._source)
        added = {k.id for k in fresh} - set(self._by_id)
        if added:
            self.keys = fresh
            self._by_id = {k.id: k for k in fresh}
        return bool(added)

    @classmethod
    def load(cls, settings: Settings) -> KeyRing:
        """The keys of `settings`; the embedded stack's key file is created at first use."""
        if settings.codec_keys:
            return cls(parse_keys(settings.codec_keys))
        path = key_file(settings)
        if not path.exists():
            if settings.environment != "embedded":
                raise KeyProblem(
                    f"no codec key file at {path}: create one with `fulfill keys rotate --file {path}` "
                    "(or set FULFILL_CODEC_KEYS)"
                )
            create_key_file(path)
        return cls(read_key_file(path), source=path)


def parse_keys(text: str) -> list[MasterKey]:
    keys: list[MasterKey] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id:
            raise KeyProblem("FULFILL_CODEC_KEYS: each key is id:base64 (e.g. k1:...), newest first")
        keys.append(MasterKey(key_id.strip(), _decode_secret(encoded, f"FULFILL_CODEC_KEYS key {key_id!r}")))
    return keys


def read_key_file(path: Path) -> list[MasterKey]:
    try:
        data = json.loads(path.read_text())
        entries = data["keys"]
        return [
            MasterKey(e["id"], _decode_secret(e["key"], f"{path} key {e['id']!r}"), e.get("created_at"))
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, KeyProblem):
            raise
        raise KeyProblem(f"codec key file {path} cannot be read: {err}") from err


def write_key_file(path: Path, keys: list[MasterKey]) -> None:
    """Replace the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"keys": [_entry(k) for k in keys]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".codec-keys-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create_key_file(path: Path) -> None:
    """A key file with one new key, unless another process made one first (then theirs stands)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".codec-keys-")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"keys": [_entry(new_key())]}, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    try:
        os.link(tmp, path)  # fails if the file exists: two first starts agree on one key
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def rotate_key_file(path: Path) -> MasterKey:
    """Add a new newest key to the file (created if missing); the older keys stay for decrypting."""
    keys = read_key_file(path) if path.exists() else []
    key = new_key()
    write_key_file(path, [key, *keys])
    return key


def _entry(key: MasterKey) -> dict[str, str | None]:
    return {"id": key.id, "key": base64.b64encode(key.secret).decode(), "created_at": key.created_at}


def _decode_secret(encoded: str, what: str) -> bytes:
    try:
        secret = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise KeyProblem(f"{what} is not base64") from err
    if len(secret) != KEY_BYTES:
        raise KeyProblem(f"{what} must be {KEY_BYTES} bytes (AES-256), not {len(secret)}")
    return secret
