"""The warehouse floor: pick tasks, and what the floor finds that corrects the books (inventory): short picks
(`short_picks`, the rule) and stock counts and adjustments (`counts`), which can release orders' unpicked
parcels. It builds on inventory, the catalogue and the order-signal outbox."""
