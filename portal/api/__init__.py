"""The JSON API for technician consoles and device agents (design.md, "HTTP contract")."""
from portal.api.views import bp

__all__ = ["bp"]
