"""How the order workflow changed while orders were running: each change sits behind a patch id (see
docs/changing-workflows.md), so orders recorded before it replay the way they ran (tests/replay)."""

# Orders of this OrderWorkflowInput.workflow_version and later batch their search attribute upserts
# (workflows/visibility.py) and buy labels as local activities. Orders of version 1 recorded before then replay
# the way they were recorded (tests/replay/histories); one a starter creates with version 1 today takes the new
# path (LEAN_FOR_EVERY_ORDER), so the old path ends with the orders that use it. Later changes are patches.
LEAN_HISTORY = 2

# Patch ids: the behaviour they name is what orders started since then do.
LEAN_FOR_EVERY_ORDER = "lean-history-for-every-order"
PARK_FAILURES = "park-failures"  # an error retrying cannot fix waits for ops in FAILED, part by part
LABELLED_PARCELS_ASK_THE_CARRIER = "labelled-parcels-ask-the-carrier"  # and "shipped" goes out on the first scan
UNDO_PER_PARCEL = "undo-per-parcel"  # a cancel undoes each parcel on its own, never one the carrier has
REFUND_THROUGH_GATEWAY = "refund-through-gateway"  # resolve --action refund pays the parcel back
TEMPORAL_CANCEL_COMPENSATES = "temporal-cancel-compensates"  # the Web UI's cancel works like `order cancel`
# The confirmation goes out as a regular activity on the customer task queue (common.temporal.customer_task_queue),
# in a workflow task of its own, before the order's first steps run
CONFIRMATION_FIRST = "confirmation-first"
