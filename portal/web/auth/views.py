"""Sign in and sign out."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from portal.domain.errors import InvalidInputError, ThrottledError
from portal.services import accounts
from portal.web.auth.forms import SignInForm
from portal.web.common import client_ip, safe_next, utcnow

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = SignInForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    destination = safe_next(form.next.data, url_for("main.index"))
    if current_user.is_authenticated and request.method == "GET":
        return redirect(destination)
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate_on_submit():
            previous = current_user.get_id() if current_user.is_authenticated else None
            try:
                result = accounts.sign_in(email=form.email.data, password=form.password.data,
                                          client_ip=client_ip(), now=utcnow(),
                                          previous_session_token=previous)
            except ThrottledError as exc:
                form.email.errors = [exc.message]
                status = 429
            except InvalidInputError as exc:
                form.email.errors = exc.field_errors["email"]
            else:
                session.clear()  # a fresh session: nothing carried over from before sign-in
                login_user(result.user)
                return redirect(destination, code=303)
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    accounts.sign_out(user=current_user, session_token=current_user.get_id(),
                      client_ip=client_ip(), now=utcnow())
    logout_user()
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.login"), code=303)
