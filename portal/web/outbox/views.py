"""The Outbox: mail waiting, sent, failed. With no mail server configured (the demo) the
messages stay here, links working, instead of being sent."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template
from flask_login import current_user, login_required

from portal.domain.permissions import Action
from portal.services import authz, mail
from portal.web.common import page_before, utcnow

bp = Blueprint("outbox", __name__)


@bp.get("/outbox")
@login_required
def index():
    authz.require(current_user, Action.ADMINISTER, message="Only administrators read the outbox.")
    before = page_before()
    page = mail.list_outbox(before=before, limit=current_app.config["PAGE_SIZE"])
    return render_template("outbox/index.html", messages=page.items,
                           next_before=page.next_after,
                           before=before, mail_configured=mail.is_configured(),
                           links_in=mail.approval_links_in,
                           bodies=mail.outbox_bodies(page.items, utcnow()))
