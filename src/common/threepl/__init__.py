"""Parcels handed to a third-party logistics provider (3PL): the records of what each 3PL was asked and told
us (store.py), and the messages between the order workflow, its activities and the 3PL's webhooks
(contracts.py). The 3PL's own API is common.integrations.threepl_api."""
