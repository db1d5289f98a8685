"""The JSON API for technician consoles and device agents (design.md, "HTTP contract")."""
from portal.api import otp_views  # noqa: F401  (its routes register on bp)
from portal.api.views import bp

__all__ = ["bp"]
