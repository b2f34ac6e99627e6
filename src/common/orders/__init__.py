"""Orders across the domains: what an order still holds (reservations, pick tasks, its place in the
backorder queue). It sits above inventory and the warehouse and reads through them."""
