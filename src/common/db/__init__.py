"""The database layer: the transaction runner (`database.Database`), the tables, the migrations. It knows no
domain: the stores of each domain (common.catalog, common.inventory, ...) are built on it, and
`common.store.Store` puts them together over one Database."""
