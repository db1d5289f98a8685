"""The home page: your departments and what you can do in each."""
from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from portal.services import authz

bp = Blueprint("main", __name__)


@bp.get("/")
@login_required
def index():
    return render_template("main/index.html", departments=authz.departments_of(current_user))
