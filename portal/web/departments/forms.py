from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length

from portal.domain import settings as rules

L = rules.LABELS
WHOLE = "Enter a whole number."


class WholeNumberField(IntegerField):
    """An IntegerField that answers "sixty" or "60.5" in the form's own words."""

    def __init__(self, label, *, message: str, **kwargs):
        super().__init__(label, **kwargs)
        self.message = message

    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError(self.message) from None


def _int(field: str) -> IntegerField:
    rng = rules.RANGES[field]
    return WholeNumberField(
        L[field],
        message=f"{WHOLE[:-1]} from {rng.low} to {rng.high}.",
        validators=[InputRequired(WHOLE)],
        render_kw={"min": rng.low, "max": rng.high, "inputmode": "numeric"},
    )


class SettingsForm(FlaskForm):
    is_confirmation_shown = BooleanField(L["is_confirmation_shown"])
    confirmation_message = TextAreaField(
        L["confirmation_message"],
        render_kw={"rows": 3, "maxlength": rules.MAX_MESSAGE_LENGTH},
    )
    confirmation_timeout_seconds = _int("confirmation_timeout_seconds")
    is_shown_when_locked = BooleanField(L["is_shown_when_locked"])
    is_email_authorization_required = BooleanField(L["is_email_authorization_required"])
    email_authorization_timeout_seconds = _int("email_authorization_timeout_seconds")
    email_recipients = TextAreaField(
        L["email_recipients"],
        validators=[Length(max=20_000)],
        render_kw={"rows": 3, "placeholder": "approver@example.com"},
    )
    is_sign_in_required_to_decide = BooleanField(L["is_sign_in_required_to_decide"])
    is_otp_allowed = BooleanField(L["is_otp_allowed"])
    is_otp_auto_sent_to_directory_users = BooleanField(L["is_otp_auto_sent_to_directory_users"])
    is_otp_auto_sent_to_internal_users = BooleanField(L["is_otp_auto_sent_to_internal_users"])
    otp_expiration_minutes = _int("otp_expiration_minutes")
    otp_min_interval_minutes = _int("otp_min_interval_minutes")
    is_reason_required = BooleanField(L["is_reason_required"])
    approvals_required = _int("approvals_required")
    is_number_matching_required = BooleanField(L["is_number_matching_required"])
    is_fallback_to_email = BooleanField(L["is_fallback_to_email"])
    escalation_recipients = TextAreaField(
        L["escalation_recipients"],
        validators=[Length(max=20_000)],
        render_kw={"rows": 2, "placeholder": "on-call@example.com"},
    )
    escalate_after_seconds = _int("escalate_after_seconds")
    report_cooldown_minutes = _int("report_cooldown_minutes")
    preapproval_max_hours = _int("preapproval_max_hours")

    def values(self) -> dict:
        return {name: getattr(self, name).data for name in rules.LABELS}


class ExclusionForm(FlaskForm):
    target = SelectField("Device or group", choices=[], validate_choice=False,
                         validators=[InputRequired("Choose a device or a group.")])


class DepartmentForm(FlaskForm):
    name = StringField("Name", validators=[InputRequired("Enter a name."), Length(max=100)])
