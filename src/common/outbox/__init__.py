"""The order-signal outbox: signals and updates for order workflows, written in the transaction of the change
they report (by inventory and warehouse operations) and delivered afterwards by common.order_signals."""
