"""The payload codec: every payload the engine hands Temporal is encrypted (AES-256-GCM), in two layers.

- Outer, every payload: the newest master key (`common.crypto.keys`); metadata `encoding: binary/encrypted` and
  `encryption-key-id`. Rotation adds a key; payloads under older keys still decode.
- Inner, a customer's workflows (an order, its returns, their messages): that customer's data key, kept wrapped
  by a master key in the database (`DataKeys`); metadata `encoding: binary/customer-encrypted` and
  `encryption-data-key-id`. Deleting the data key (`fulfill customer forget`) makes those histories unreadable
  for good: crypto-shredding.

A workflow's customer is learnt from its input when the workflow is started (`customer.id`, `order.customer.id`,
or, for a workflow about an order, the customer of `order_id`'s workflow); every later payload of that workflow
(updates, activity inputs and results, failures) then uses the same data key. Payloads written before the codec
(plaintext) pass through unchanged, so old histories still decode and replay.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec, SerializationContext, WithSerializationContext
from temporalio.converter import WorkflowSerializationContext as _WorkflowContext

from common.crypto.keys import KeyRing, MasterKey
from common.models import workflow_id_for

ENCRYPTED = b"binary/encrypted"
CUSTOMER_ENCRYPTED = b"binary/customer-encrypted"
KEY_ID = "encryption-key-id"
DATA_KEY_ID = "encryption-data-key-id"
_NONCE = 12


class PayloadUndecodable(ValueError):
    """A payload this process cannot decrypt: a master key it does not have, or tampered ciphertext."""


class CustomerDataErased(PayloadUndecodable):
    """The payload belongs to a customer whose data key was deleted (`fulfill customer forget`)."""

    def __init__(self, customer_id: str, erased_at: str) -> None:
        super().__init__(f"customer {customer_id}'s data was erased on {erased_at}: this payload cannot be read")
        self.customer_id = customer_id
        self.erased_at = erased_at


@dataclass(frozen=True)
class DataKey:
    key_id: str
    customer_id: str
    secret: bytes

    def __repr__(self) -> str:  # never the secret
        return f"DataKey({self.key_id!r}, customer {self.customer_id!r})"


class DataKeys(Protocol):
    """Customers' data keys and which customer each workflow belongs to (common.privacy.data_keys)."""

    async def customer_of(self, workflow_id: str) -> str | None: ...

    async def register(self, workflow_id: str, customer_id: str) -> None: ...

    async def active_key(self, customer_id: str, *, fresh: bool = False) -> DataKey:
        """The customer's data key for new payloads, created (and stored) if it has none. `fresh`: read it from
        the store, not from memory."""
        ...

    async def key(self, key_id: str) -> DataKey:
        """Raises CustomerDataErased for a deleted key, PayloadUndecodable for one never known."""
        ...


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """See the module docstring. `erased_placeholder`: a payload of a forgotten customer decodes to a JSON note
    saying so instead of raising (the codec server, for the Web UI)."""

    def __init__(
        self,
        ring: KeyRing,
        data_keys: DataKeys | None = None,
        *,
        erased_placeholder: bool = False,
        workflow_id: str | None = None,
        starts_workflows: bool = False,
    ) -> None:
        self.ring = ring
        self.data_keys = data_keys
        self._erased_placeholder = erased_placeholder
        self._workflow_id = workflow_id
        # A workflow context (a start, signal, update, query, result): its input may name the customer
        self._learns_customer = starts_workflows

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        return EncryptionCodec(
            self.ring,
            self.data_keys,
            erased_placeholder=self._erased_placeholder,
            workflow_id=getattr(context, "workflow_id", None),
            starts_workflows=isinstance(context, _WorkflowContext),
        )

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        data_key = await self._data_key(payloads)
        master = self.ring.newest
        return [_seal(_seal_for_customer(p, data_key) if data_key else p, master) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCRYPTED:
                payload = self._open(payload)
            if payload.metadata.get("encoding") == CUSTOMER_ENCRYPTED:
                payload = await self._open_for_customer(payload)
            decoded.append(payload)
        return decoded

    async def _data_key(self, payloads: Sequence[Payload]) -> DataKey | None:
        if self.data_keys is None or self._workflow_id is None:
            return None
        customer = await self.data_keys.customer_of(self._workflow_id)
        if customer is None and self._learns_customer:
            customer = await self._customer_named_in(payloads)
            if customer is not None:
                await self.data_keys.register(self._workflow_id, customer)
                # A new workflow: never a key remembered from before the customer was forgotten elsewhere
                return await self.data_keys.active_key(customer, fresh=True)
        return await self.data_keys.active_key(customer) if customer else None

    async def _customer_named_in(self, payloads: Sequence[Payload]) -> str | None:
        assert self.data_keys is not None
        for payload in payloads:
            found = customer_reference(payload)
            if isinstance(found, CustomerId):
                return found.id
            if isinstance(found, OrderWorkflow) and found.workflow_id != self._workflow_id:
                return await self.data_keys.customer_of(found.workflow_id)
        return None

    def _open(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        master = self.ring.get(key_id)
        if master is None and self.ring.reload():  # rotated by another process since this one started
            master = self.ring.get(key_id)
        if master is None:
            raise PayloadUndecodable(f"payload encrypted with codec key {key_id!r}, which this process does not have")
        return _unseal(payload.data, master.secret, key_id.encode(), what=f"codec key {key_id!r}")

    async def _open_for_customer(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(DATA_KEY_ID, b"").decode()
        if self.data_keys is None:
            raise PayloadUndecodable(f"payload encrypted with customer data key {key_id!r}: no data key store here")
        try:
            data_key = await self.data_keys.key(key_id)
        except CustomerDataErased as erased:
            if not self._erased_placeholder:
                raise
            note = {"erased": f"customer {erased.customer_id}'s data was erased on {erased.erased_at}"}
            return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(note).encode())
        return _unseal(payload.data, data_key.secret, key_id.encode(), what=f"data key {key_id!r}")


@dataclass(frozen=True)
class CustomerId:
    id: str


@dataclass(frozen=True)
class OrderWorkflow:
    workflow_id: str


def customer_reference(payload: Payload) -> CustomerId | OrderWorkflow | None:
    """Whom a workflow's input is about: `customer.id` or `order.customer.id` (an order, a return), else the
    order of `order_id` (a workflow about an order, e.g. an SMS's email fallback)."""
    if payload.metadata.get("encoding") != b"json/plain":
        return None
    try:
        value = json.loads(payload.data)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for holder in (value, value.get("order")):
        customer = holder.get("customer") if isinstance(holder, dict) else None
        if isinstance(customer, dict) and isinstance(customer.get("id"), str):
            return CustomerId(customer["id"])
    order_id = value.get("order_id")
    return OrderWorkflow(workflow_id_for(order_id)) if isinstance(order_id, str) and order_id else None


def _seal(payload: Payload, master: MasterKey) -> Payload:
    return Payload(
        metadata={"encoding": ENCRYPTED, KEY_ID: master.id.encode()},
        data=encrypt(master.secret, payload.SerializeToString(), master.id.encode()),
    )


def _seal_for_customer(payload: Payload, data_key: DataKey) -> Payload:
    return Payload(
        metadata={"encoding": CUSTOMER_ENCRYPTED, DATA_KEY_ID: data_key.key_id.encode()},
        data=encrypt(data_key.secret, payload.SerializeToString(), data_key.key_id.encode()),
    )


def encrypt(secret: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Nonce + AES-256-GCM ciphertext of `plaintext`, bound to `aad` (the key id: a payload moved under another
    key id does not decrypt)."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(secret).encrypt(nonce, plaintext, aad)


def decrypt(secret: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext of `encrypt`; InvalidTag if the key, the bound `aad` or the bytes are not the ones sealed."""
    return AESGCM(secret).decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)


def _unseal(data: bytes, secret: bytes, aad: bytes, *, what: str) -> Payload:
    try:
        plaintext = decrypt(secret, data, aad)
    except InvalidTag as err:
        raise PayloadUndecodable(f"payload does not decrypt with {what}: tampered with, or another key") from err
    payload = Payload()
    payload.ParseFromString(plaintext)
    return payload
