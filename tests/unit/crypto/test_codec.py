"""The payload codec with real keys, a real key file and the real customer key store on SQLite."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext

from common.config import Settings
from common.crypto.codec import (
    CUSTOMER_ENCRYPTED,
    DATA_KEY_ID,
    ENCRYPTED,
    KEY_ID,
    CustomerDataErased,
    EncryptionCodec,
    PayloadUndecodable,
)
from common.crypto.keys import KeyProblem, KeyRing, create_key_file, parse_keys, read_key_file, rotate_key_file
from common.db.database import Database, utc_now
from common.privacy.data_keys import CustomerKeyStore

ORDER_INPUT = {
    "order": {
        "order_id": "ORD-9",
        "customer": {"id": "C-77", "name": "Ada Quillfeather", "email": "ada.quillfeather@example.org"},
        "ship_to": {"name": "Ada Quillfeather", "line1": "12 Vellum Row", "city": "Inkton"},
    }
}


def json_payload(value: object) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def start_of(workflow_id: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)


def activity_of(workflow_id: str) -> ActivitySerializationContext:
    return ActivitySerializationContext(
        namespace="default",
        activity_id="1",
        activity_type="notify",
        activity_task_queue="q",
        workflow_id=workflow_id,
        workflow_type="OrderWorkflow",
        is_local=False,
    )


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "codec-keys.json"
    create_key_file(path)
    return path


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    yield database
    await database.close()


def codec_for(key_path: Path, db: Database, **kwargs: bool) -> EncryptionCodec:
    ring = KeyRing(read_key_file(key_path), source=key_path)
    return EncryptionCodec(ring, CustomerKeyStore(db, ring, cache=False), **kwargs)


async def test_a_customers_payloads_are_encrypted_twice_and_decode_back(key_path: Path, db: Database) -> None:
    codec = codec_for(key_path, db)
    started = await codec.with_context(start_of("order-ORD-9")).encode([json_payload(ORDER_INPUT)])
    # Later payloads of the same workflow (an activity's input) use the customer's key too
    notify = json_payload({"to": "ada.quillfeather@example.org"})
    [activity_input] = await codec.with_context(activity_of("order-ORD-9")).encode([notify])

    for sealed in (started[0], activity_input):
        assert sealed.metadata["encoding"] == ENCRYPTED
        assert sealed.metadata[KEY_ID] == read_key_file(key_path)[0].id.encode()
        assert b"Quillfeather" not in sealed.SerializeToString() and b"ada." not in sealed.SerializeToString()
    ring_only = EncryptionCodec(codec.ring)  # the master key alone does not open the customer's layer
    with pytest.raises(PayloadUndecodable, match="no data key store"):
        await ring_only.decode(started)

    assert await codec.decode([*started, activity_input]) == [json_payload(ORDER_INPUT), notify]


async def test_the_inner_layer_names_a_data_key_not_the_customer(key_path: Path, db: Database) -> None:
    codec = codec_for(key_path, db)
    [sealed] = await codec.with_context(start_of("order-ORD-9")).encode([json_payload(ORDER_INPUT)])
    ring = KeyRing(read_key_file(key_path))
    outer_removed = await _open_outer(ring, sealed)
    assert outer_removed.metadata["encoding"] == CUSTOMER_ENCRYPTED
    assert outer_removed.metadata[DATA_KEY_ID].startswith(b"ck_")
    assert b"C-77" not in outer_removed.SerializeToString()


async def _open_outer(ring: KeyRing, sealed: Payload) -> Payload:
    from common.crypto.codec import decrypt

    inner = Payload()
    key_id = sealed.metadata[KEY_ID]
    inner.ParseFromString(decrypt(ring.get(key_id.decode()).secret, sealed.data, key_id))  # type: ignore[union-attr]
    return inner


async def test_workflows_of_no_customer_get_the_master_key_only(key_path: Path, db: Database) -> None:
    codec = codec_for(key_path, db)
    sync = json_payload({"provider": "shipbob"})
    [sealed] = await codec.with_context(start_of("threepl-inventory-sync-shipbob")).encode([sync])
    assert sealed.metadata["encoding"] == ENCRYPTED
    assert (await _open_outer(codec.ring, sealed)) == sync


async def test_a_workflow_about_an_order_belongs_to_the_orders_customer(key_path: Path, db: Database) -> None:
    codec = codec_for(key_path, db)
    await codec.with_context(start_of("order-ORD-9")).encode([json_payload(ORDER_INPUT)])
    fallback = json_payload({"sms_key": "ORD-9:shipped:sms", "order_id": "ORD-9"})
    [sealed] = await codec.with_context(start_of("sms-fallback:ORD-9:shipped:sms")).encode([fallback])
    assert (await _open_outer(codec.ring, sealed)).metadata["encoding"] == CUSTOMER_ENCRYPTED


async def test_plaintext_payloads_from_before_the_codec_pass_through(key_path: Path, db: Database) -> None:
    old = json_payload(ORDER_INPUT)
    assert await codec_for(key_path, db).decode([old]) == [old]


async def test_tampered_ciphertext_is_refused(key_path: Path, db: Database) -> None:
    codec = codec_for(key_path, db)
    [sealed] = await codec.encode([json_payload({"x": 1})])
    sealed.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadUndecodable, match="tampered"):
        await codec.decode([sealed])


async def test_after_rotation_new_payloads_use_the_new_key_and_old_ones_still_decode(
    key_path: Path, db: Database
) -> None:
    before = codec_for(key_path, db)  # a process started before the rotation
    old = await before.with_context(start_of("order-ORD-9")).encode([json_payload(ORDER_INPUT)])
    new_key = rotate_key_file(key_path)

    after = codec_for(key_path, db)  # a process started after it
    new = await after.with_context(start_of("order-ORD-10")).encode([json_payload({"order_id": "ORD-10"})])
    assert old[0].metadata[KEY_ID] != new_key.id.encode()
    assert new[0].metadata[KEY_ID] == new_key.id.encode()
    assert await after.decode(old) == [json_payload(ORDER_INPUT)]
    # The older process meets a key it does not know: it reads the key file again
    assert await before.decode(new) == [json_payload({"order_id": "ORD-10"})]


async def test_a_key_nobody_has_is_named(key_path: Path, db: Database, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    create_key_file(other)
    [sealed] = await codec_for(other, db).encode([json_payload({"x": 1})])
    key_id = read_key_file(other)[0].id
    with pytest.raises(PayloadUndecodable, match=f"codec key '{key_id}'"):
        await codec_for(key_path, db).decode([sealed])


async def test_a_forgotten_customers_payloads_no_longer_decode(key_path: Path, db: Database) -> None:
    codec = codec_for(key_path, db)
    sealed = await codec.with_context(start_of("order-ORD-9")).encode([json_payload(ORDER_INPUT)])
    ring = KeyRing(read_key_file(key_path))
    assert await CustomerKeyStore(db, ring).destroy_all("C-77", utc_now()) == 1

    with pytest.raises(CustomerDataErased, match="customer C-77's data was erased"):
        await codec.decode(sealed)
    # The codec server shows a note instead, for the Web UI
    [note] = await codec_for(key_path, db, erased_placeholder=True).decode(sealed)
    assert json.loads(note.data)["erased"].startswith("customer C-77's data was erased on ")
    # The master key alone never held it
    assert b"Quillfeather" not in (await _open_outer(ring, sealed[0])).SerializeToString()


def test_keys_from_settings_must_be_32_bytes_of_base64() -> None:
    with pytest.raises(KeyProblem, match="must be 32 bytes"):
        parse_keys("k1:" + "QUFB")
    with pytest.raises(KeyProblem, match="not base64"):
        parse_keys("k1:not base64!")
    with pytest.raises(KeyProblem, match="id:base64"):
        parse_keys("just-a-key")


def test_production_never_creates_a_key_file(tmp_path: Path) -> None:
    settings = Settings(environment="production", codec_key_file=tmp_path / "keys.json", codec_keys=None)
    with pytest.raises(KeyProblem, match="no codec key file"):
        KeyRing.load(settings)
    assert not (tmp_path / "keys.json").exists()
    embedded = Settings(environment="embedded", codec_key_file=tmp_path / "keys.json", codec_keys=None)
    assert len(KeyRing.load(embedded).keys) == 1
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600


async def test_a_new_workflow_never_uses_a_key_forgotten_elsewhere(key_path: Path, db: Database) -> None:
    ring = KeyRing(read_key_file(key_path), source=key_path)
    remembering = EncryptionCodec(ring, CustomerKeyStore(db, ring, key_ttl=3600))  # a long-lived process
    await remembering.with_context(start_of("order-ORD-9")).encode([json_payload(ORDER_INPUT)])
    await CustomerKeyStore(db, ring).destroy_all("C-77", utc_now())  # another process forgets the customer

    # The customer orders again through the process that still remembers the old key
    again = {"order": {**ORDER_INPUT["order"], "order_id": "ORD-10"}}
    sealed = await remembering.with_context(start_of("order-ORD-10")).encode([json_payload(again)])
    assert await codec_for(key_path, db).decode(sealed) == [json_payload(again)]
