"""The HTTP API: a thin FastAPI layer over FulfillmentApi for storefronts, ops tools and warehouse staff.

create_app() builds it; workers/api.py serves it. Stateless: every request goes to Temporal and the database,
so several processes can run behind one load balancer."""
