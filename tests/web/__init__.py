"""Web-layer tests: pages, forms, htmx fragments, headers."""
