"""Plain-Python rules of the product: no Flask, no SQLAlchemy, no clock."""
