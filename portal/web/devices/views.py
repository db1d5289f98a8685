"""Devices and device groups of a department."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, url_for
from flask_login import current_user, login_required
from wtforms.fields.choices import SelectChoice

from portal.domain.errors import ConflictError, InvalidInputError
from portal.domain.permissions import Action, may
from portal.services import authz, devices as service, otp, preapprovals, session_control
from portal.web.common import (
    apply_errors,
    current_actor,
    department_or_403,
    done,
    page_after,
    utcnow,
)
from portal.web.errors import status_of
from portal.web.devices.forms import DeleteForm, DeviceForm, GenerateOtpForm, GroupForm

bp = Blueprint("devices", __name__, url_prefix="/departments/<int:department_id>")


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every page here needs a signed-in user."""


def _device_form(department, **kwargs) -> DeviceForm:
    form = DeviceForm(**kwargs)
    form.group_id.choices = [SelectChoice("", "No group")] + [
        SelectChoice(str(group_id), name) for group_id, name in service.group_names(department)
    ]
    return form


def _list_page(department, form, status=200):
    after = page_after()
    page = service.list_devices(department, after=after,
                                limit=current_app.config["PAGE_SIZE"])
    return render_template(
        "devices/index.html", department=department, form=form, page=page, after=after,
        can_manage=authz.can(current_user, Action.MANAGE, department.id),
    ), status


@bp.get("/devices")
def index(department_id: int):
    department = department_or_403(department_id, Action.VIEW)
    return _list_page(department, _device_form(department))


@bp.post("/devices")
def create(department_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    form = _device_form(department)
    status = 422
    if form.validate_on_submit():
        try:
            device, token = service.create_device(
                department=department, name=form.name.data, os=form.os.data,
                ip_address=form.ip_address.data, group_id=form.group_id.data,
                actor=current_actor(), now=utcnow())
        except (InvalidInputError, ConflictError) as exc:
            apply_errors(form, exc.field_errors)
            status = status_of(exc)
        else:
            return render_template("devices/created.html", department=department,
                                   device=device, token=token), 201
    return _list_page(department, form, status=status)


def _device_page(department, device, roles, form, status=200):
    return render_template(
        "devices/show.html", department=department, device=device, form=form,
        client_sessions=otp.client_sessions_of(device),
        running_sessions=session_control.running_sessions_of(device),
        pre_approvals=preapprovals.live_on(device, utcnow()) if may(roles, Action.MANAGE)
        else [],
        can_end=may(roles, Action.END_SESSION),
        can_issue=may(roles, Action.ISSUE_OTP), can_manage=may(roles, Action.MANAGE),
        otp_allowed=department.settings.is_otp_allowed), status


def _viewable_device(department_id: int, device_id: int):
    """The device's page: for those who read the department and those who issue codes.
    The viewer's roles there are read once, for the check and for what the page offers."""
    roles = authz.roles_in(current_user, department_id)
    action = Action.VIEW if may(roles, Action.VIEW) else Action.ISSUE_OTP
    department = authz.department_for(current_user, department_id, action, roles=roles)
    return department, service.get_device(department, device_id), roles


@bp.get("/devices/<int:device_id>")
def show(department_id: int, device_id: int):
    department, device, roles = _viewable_device(department_id, device_id)
    return _device_page(department, device, roles, GenerateOtpForm(formdata=None))


@bp.post("/devices/<int:device_id>/otp")
def generate_otp(department_id: int, device_id: int):
    department, device, roles = _viewable_device(department_id, device_id)
    form = GenerateOtpForm()
    if form.validate_on_submit():
        try:
            sent = otp.generate_otp(user=current_user, device=device,
                                    username=form.username.data, email=form.email.data,
                                    comment=form.comment.data, actor=current_actor(),
                                    now=utcnow())
        except InvalidInputError as exc:
            apply_errors(form, exc.field_errors)
        else:
            verb = "sent again" if sent.is_resend else "sent"
            return done(f"A one-time password for {sent.otp.username} was {verb} to "
                        f"{sent.otp.email}; it expires at "
                        f"{sent.otp.expires_at.strftime('%H:%M UTC')}.",
                        url_for("devices.show", department_id=department.id,
                                device_id=device.id))
    return _device_page(department, device, roles, form, status=422)


def _revoke_page(department, device, window, status=200, error=None):
    return render_template("devices/revoke_preapproval.html", department=department,
                           device=device, window=window, error=error,
                           now=utcnow()), status


@bp.get("/devices/<int:device_id>/pre-approvals/<int:preapproval_id>/revoke")
def confirm_revoke(department_id: int, device_id: int, preapproval_id: int):
    """"Revoke": the confirmation step (a GET, which changes nothing)."""
    department = department_or_403(department_id, Action.MANAGE)
    device = service.get_device(department, device_id)
    return _revoke_page(department, device, preapprovals.get_on(device, preapproval_id))


@bp.post("/devices/<int:device_id>/pre-approvals/<int:preapproval_id>/revoke")
def revoke_preapproval(department_id: int, device_id: int, preapproval_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    device = service.get_device(department, device_id)
    try:
        window = preapprovals.revoke(user=current_user, device=device,
                                     preapproval_id=preapproval_id, actor=current_actor(),
                                     now=utcnow())
    except ConflictError as exc:
        return _revoke_page(department, device, preapprovals.get_on(device, preapproval_id),
                            status_of(exc), exc.message)
    return done(f"Pre-approval of {window.technician.email} on {device.name} revoked: "
                f"their next request asks again.",
                url_for("devices.show", department_id=department.id, device_id=device.id))


@bp.route("/devices/<int:device_id>/edit", methods=["GET", "POST"])
def edit(department_id: int, device_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    device = service.get_device(department, device_id)
    form = _device_form(department, obj=device)
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate_on_submit():
            try:
                service.update_device(department=department, device=device,
                                      name=form.name.data, os=form.os.data,
                                      ip_address=form.ip_address.data,
                                      group_id=form.group_id.data,
                                      actor=current_actor(), now=utcnow())
            except (InvalidInputError, ConflictError) as exc:
                device = service.get_device(department, device_id)
                apply_errors(form, exc.field_errors)
                status = status_of(exc)
            else:
                return done(f"Device “{device.name}” saved.",
                            url_for("devices.index", department_id=department.id))
    return render_template("devices/edit.html", department=department, device=device,
                           form=form, delete_form=DeleteForm()), status


@bp.post("/devices/<int:device_id>/delete")
def delete(department_id: int, device_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    device = service.get_device(department, device_id)
    delete_form = DeleteForm()
    if not delete_form.validate_on_submit():
        return render_template("devices/edit.html", department=department, device=device,
                               form=_device_form(department, obj=device),
                               delete_form=delete_form), 422
    name = device.name
    service.delete_device(department=department, device=device, actor=current_actor(),
                          now=utcnow())
    return done(f"Device “{name}” deleted.", url_for("devices.index",
                                                     department_id=department.id))


# --- groups --------------------------------------------------------------------------


def _groups_page(department, form, status=200):
    return render_template(
        "devices/groups.html", department=department, form=form,
        groups=service.list_groups(department),
        can_manage=authz.can(current_user, Action.MANAGE, department.id),
    ), status


@bp.get("/groups")
def groups(department_id: int):
    department = department_or_403(department_id, Action.VIEW)
    return _groups_page(department, GroupForm(formdata=None))


@bp.post("/groups")
def create_group(department_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    form = GroupForm()
    status = 422
    if form.validate_on_submit():
        try:
            group = service.create_group(department=department, name=form.name.data,
                                         actor=current_actor(), now=utcnow())
        except (InvalidInputError, ConflictError) as exc:
            apply_errors(form, exc.field_errors)
            status = status_of(exc)
        else:
            return done(f"Group “{group.name}” created.",
                        url_for("devices.groups", department_id=department.id))
    return _groups_page(department, form, status=status)


@bp.route("/groups/<int:group_id>/edit", methods=["GET", "POST"])
def edit_group(department_id: int, group_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    group = service.get_group(department, group_id)
    form = GroupForm(obj=group)
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate_on_submit():
            try:
                service.rename_group(department=department, group=group, name=form.name.data,
                                     actor=current_actor(), now=utcnow())
            except (InvalidInputError, ConflictError) as exc:
                group = service.get_group(department, group_id)
                apply_errors(form, exc.field_errors)
                status = status_of(exc)
            else:
                return done("Group renamed.", url_for("devices.groups",
                                                      department_id=department.id))
    return render_template("devices/edit_group.html", department=department, group=group,
                           form=form, delete_form=DeleteForm()), status


@bp.post("/groups/<int:group_id>/delete")
def delete_group(department_id: int, group_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    group = service.get_group(department, group_id)
    delete_form = DeleteForm()
    if not delete_form.validate_on_submit():
        return render_template("devices/edit_group.html", department=department, group=group,
                               form=GroupForm(obj=group), delete_form=delete_form), 422
    name = group.name
    service.delete_group(department=department, group=group, actor=current_actor(),
                         now=utcnow())
    return done(f"Group “{name}” deleted; its devices stay, without a group.",
                url_for("devices.groups", department_id=department.id))
