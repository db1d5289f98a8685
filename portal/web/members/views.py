"""Members of a department and their roles."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, url_for
from flask_login import current_user, login_required

from portal.domain.errors import ConflictError, InvalidInputError
from portal.domain.permissions import ROLE_NAMES, Action
from portal.services import accounts, authz, members as service
from portal.web.common import (
    apply_errors,
    current_actor,
    department_or_403,
    done,
    page_after,
    utcnow,
)
from portal.web.errors import status_of
from portal.web.members.forms import MemberForm

bp = Blueprint("members", __name__, url_prefix="/departments/<int:department_id>/members")


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every page here needs a signed-in user."""


def _page(department, form, status=200):
    after = page_after()
    page = service.list_members(department, after=after, limit=current_app.config["PAGE_SIZE"])
    return render_template(
        "members/index.html", department=department, form=form, page=page, after=after,
        role_names=ROLE_NAMES,
        can_manage=authz.can(current_user, Action.MANAGE, department.id),
    ), status


@bp.get("")
def index(department_id: int):
    department = department_or_403(department_id, Action.VIEW)
    return _page(department, MemberForm(formdata=None))


@bp.post("")
def add(department_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    form = MemberForm()
    status = 422
    if form.validate_on_submit():
        try:
            user = accounts.create_or_update_user(
                email=form.email.data, password=form.password.data or None,
                role=form.role.data, department=department, actor=current_actor(),
                now=utcnow(), reject_password_for_existing=True)
        except (InvalidInputError, ConflictError) as exc:
            apply_errors(form, exc.field_errors)
            status = status_of(exc)
        else:
            return done(f"{user.email} is now {ROLE_NAMES[form.role.data].lower()} "
                        f"of {department.name}.",
                        url_for("members.index", department_id=department.id))
    return _page(department, form, status=status)


@bp.post("/<int:membership_id>/delete")
def remove(department_id: int, membership_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    membership = service.get_membership(department, membership_id)
    email, role = membership.user.email, membership.role
    accounts.remove_role(membership=membership, actor=current_actor(), now=utcnow())
    return done(f"{email} is no longer {ROLE_NAMES[role].lower()} of {department.name}.",
                url_for("members.index", department_id=department.id))
