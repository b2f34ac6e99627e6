"""Inventory domain logic that needs no database: warehouse allocation, demand forecasting and reorder
planning, CSV import parsing, low-stock alerts and forecast charts. The Store (common.db) persists; these
modules decide."""
