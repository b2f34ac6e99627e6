"""Notifications: the delivery log of customer messages, one per (order, event, channel), claimed before
sending so a retried activity never sends twice."""
