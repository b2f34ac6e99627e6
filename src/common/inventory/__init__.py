"""Inventory: the stock books (stock levels, ledger, low-stock crossings), purchase orders, reservations and
backorders, and the pure logic that decides over them (warehouse allocation, demand forecasting, reorder
planning, CSV import parsing, low-stock alerts and forecast charts). Its stores are built on common.db and the
catalogue; the warehouse domain builds on them."""
