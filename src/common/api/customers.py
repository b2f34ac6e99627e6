"""FulfillmentApi's customer methods: the right to erasure (common.privacy.erasure)."""

from __future__ import annotations

import logging

from temporalio.client import Client

from common.privacy import customer_keys
from common.privacy.erasure import ErasureReport, forget_customer
from common.store import Store

log = logging.getLogger("fulfill.api")


class CustomerDesk:
    client: Client
    store: Store

    async def forget_customer(self, customer_id: str) -> ErasureReport:
        """Erase the customer: refused (CustomerStillActive) while any workflow of theirs runs, UnknownCustomer
        when none is known; nothing changes then."""
        keys = await customer_keys(self.client)
        report = await forget_customer(self.client, self.store.db, keys, customer_id)
        log.info(
            "customer %s forgotten: %d workflow(s), %d data key(s) destroyed",
            customer_id,
            len(report.workflows),
            report.keys_destroyed,
        )
        return report
