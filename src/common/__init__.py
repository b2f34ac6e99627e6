"""Shared core of the fulfillment engine: models, config, database, integrations, client and CLI."""
