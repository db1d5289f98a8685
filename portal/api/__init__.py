"""The JSON API for technician consoles and device agents (design.md, "HTTP contract")."""
from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from portal.api import views  # noqa: E402,F401  (routes register on bp)
