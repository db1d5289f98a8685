"""Departments: list, create, rename; settings; exclusions (the audit log: portal.web.audit)."""
from __future__ import annotations

from flask import Blueprint, render_template, request, url_for
from flask_login import current_user, login_required
from wtforms.fields.choices import SelectChoice

from portal.domain.errors import ConflictError, InvalidInputError, NotFoundError
from portal.domain.permissions import Action
from portal.services import authz, departments as service, directory
from portal.web.errors import status_of
from portal.web.common import (
    apply_errors,
    current_actor,
    department_or_403,
    done,
    fragment,
    is_htmx,
    utcnow,
)
from portal.web.departments.forms import DepartmentForm, ExclusionForm, SettingsForm

bp = Blueprint("departments", __name__, url_prefix="/departments")


def _require_admin() -> None:
    authz.require(current_user, Action.ADMINISTER,
                  message="Only administrators create and rename departments.")


@bp.get("")
@login_required
def index():
    return render_template("departments/index.html", form=DepartmentForm(),
                           departments=authz.departments_of(current_user),
                           can_administer=authz.can_anywhere(current_user, Action.ADMINISTER))


@bp.post("")
@login_required
def create():
    _require_admin()
    form = DepartmentForm()
    status = 422
    if form.validate_on_submit():
        try:
            department = service.create_department(name=form.name.data, actor=current_actor(),
                                                   now=utcnow())
        except (InvalidInputError, ConflictError) as exc:

            apply_errors(form, exc.field_errors)
            status = status_of(exc)
        else:
            return done(f"Department “{department.name}” created.",
                        url_for("departments.settings", department_id=department.id))
    return render_template("departments/index.html", form=form,
                           departments=authz.departments_of(current_user),
                           can_administer=True), status


@bp.route("/<int:department_id>/edit", methods=["GET", "POST"])
@login_required
def edit(department_id: int):
    _require_admin()
    department = service.get_department(department_id)
    form = DepartmentForm(obj=department)
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate_on_submit():
            try:
                service.rename_department(department=department, name=form.name.data,
                                          actor=current_actor(), now=utcnow())
            except (InvalidInputError, ConflictError) as exc:
                apply_errors(form, exc.field_errors)
                status = status_of(exc)
            else:
                return done("Department renamed.",
                            url_for("departments.settings", department_id=department.id))
    return render_template("departments/edit.html", department=department, form=form), status


# --- settings ------------------------------------------------------------------------


def _settings_context(department, form, exclusion_form=None):
    can_manage = authz.can(current_user, Action.MANAGE, department.id)
    return {
        "department": department,
        "form": form,
        "can_manage": can_manage,
        "directory_configured": directory.is_configured(),
        "exclusions": service.list_exclusions(department),
        # The "Add an exclusion" picker is only shown to those who can use it.
        "exclusion_form": exclusion_form or (_exclusion_form(department) if can_manage
                                             else None),
    }


def _exclusion_form(department, formdata=None) -> ExclusionForm:
    form = ExclusionForm(formdata=formdata) if formdata is not None else ExclusionForm()
    devices, groups = service.exclusion_candidates(department)
    if devices or groups:
        form.target.choices = (
            [SelectChoice("", "Choose a device or group…")]
            + [SelectChoice(f"device:{d.id}", d.name, optgroup="Devices") for d in devices]
            + [SelectChoice(f"group:{g.id}", g.name, optgroup="Groups") for g in groups]
        )
    else:
        form.target.choices = [SelectChoice("", "Every device and group is already excluded")]
    return form


@bp.route("/<int:department_id>/settings", methods=["GET", "POST"])
@login_required
def settings(department_id: int):
    if request.method == "GET":
        department = department_or_403(department_id, Action.VIEW)
        form = SettingsForm(data=service.settings_values(department.settings))
        return render_template("departments/settings.html",
                               **_settings_context(department, form))
    department = department_or_403(department_id, Action.MANAGE)
    form = SettingsForm()
    message = None
    if form.validate_on_submit():
        try:
            changes = service.update_settings(department=department, values=form.values(),
                                              actor=current_actor(), now=utcnow())
        except InvalidInputError as exc:
            apply_errors(form, exc.field_errors)
        else:
            message = (f"Settings saved ({len(changes)} change{'s' if len(changes) != 1 else ''})."
                       if changes else "No changes to save.")
            if not is_htmx():
                return done(message, url_for("departments.settings",
                                             department_id=department.id))
            form = SettingsForm(formdata=None,
                                data=service.settings_values(department.settings))
    status = 200 if message else 422
    if is_htmx():
        return fragment("departments/_settings_form.html", status=status,
                        flash_message=message or "Please correct the highlighted fields.",
                        category="success" if message else "error",
                        department=department, form=form, can_manage=True,
                        directory_configured=directory.is_configured())
    return render_template("departments/settings.html",
                           **_settings_context(department, form)), status


# --- exclusions ----------------------------------------------------------------------


def _exclusions_fragment(department, *, status=200, message=None, category="success",
                         exclusion_form=None):
    can_manage = authz.can(current_user, Action.MANAGE, department.id)
    return fragment(
        "departments/_exclusions.html", status=status, flash_message=message,
        category=category, department=department,
        exclusions=service.list_exclusions(department),
        exclusion_form=exclusion_form or (_exclusion_form(department) if can_manage
                                          else None),
        can_manage=can_manage,
    )


@bp.get("/<int:department_id>/exclusions")
@login_required
def exclusions(department_id: int):
    department = department_or_403(department_id, Action.VIEW)
    return _exclusions_fragment(department)


@bp.post("/<int:department_id>/exclusions")
@login_required
def add_exclusion(department_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    form = _exclusion_form(department, formdata=request.form)
    settings_url = url_for("departments.settings", department_id=department.id,
                           _anchor="exclusions")
    status = 422
    if form.validate_on_submit():
        try:
            exclusion = service.add_exclusion(department=department, target=form.target.data,
                                              actor=current_actor(), now=utcnow())
        except (InvalidInputError, ConflictError) as exc:
            apply_errors(form, exc.field_errors)
            status = status_of(exc)
        else:
            name = (exclusion.device or exclusion.group).name
            message = f"“{name}” excluded from session confirmation."
            if is_htmx():
                return _exclusions_fragment(department, message=message)
            return done(message, settings_url)
    if is_htmx():
        return _exclusions_fragment(department, status=status, exclusion_form=form,
                                    message=form.target.errors[0] if form.target.errors
                                    else "Choose a device or a group.", category="error")
    form_page = SettingsForm(data=service.settings_values(department.settings))
    return render_template("departments/settings.html",
                           **_settings_context(department, form_page, form)), status


@bp.post("/<int:department_id>/exclusions/<int:exclusion_id>/delete")
@login_required
def remove_exclusion(department_id: int, exclusion_id: int):
    department = department_or_403(department_id, Action.MANAGE)
    try:
        name = service.remove_exclusion(department=department, exclusion_id=exclusion_id,
                                        actor=current_actor(), now=utcnow())
    except NotFoundError as exc:
        if is_htmx():
            return _exclusions_fragment(department, message=exc.message, category="error")
        raise
    message = f"“{name}” is no longer excluded."
    if is_htmx():
        return _exclusions_fragment(department, message=message)
    return done(message, url_for("departments.settings", department_id=department.id,
                                 _anchor="exclusions"))

