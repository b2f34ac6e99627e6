"""The catalogue: products (SKUs) and warehouses; every other domain refers to them."""
