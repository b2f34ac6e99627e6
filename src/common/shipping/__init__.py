"""Shipping: the label bought from the carrier for each parcel. Words: a parcel is one box of an order from
one warehouse; its label is what the carrier sells for it; the carrier shipment is the carrier's object the
label is bought on. Label records are kept by key (the parcel's label key), so a retried purchase never buys
twice."""
