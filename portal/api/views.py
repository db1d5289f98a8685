"""API routes. Unknown paths under /api/v1 answer in the contract's error shape."""
from __future__ import annotations

from flask import jsonify

from portal.api import bp


@bp.route("/<path:_unknown>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def unknown(_unknown: str):
    return jsonify(error={"code": "not_found", "message": "No such API endpoint."}), 404
