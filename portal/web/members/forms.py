from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, Optional

from portal.domain.permissions import ROLE_NAMES

ROLE_CHOICES = [SelectChoice(value, label) for value, label in ROLE_NAMES.items()]


class MemberForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired("Enter an email."), Length(max=254)],
                       render_kw={"autocomplete": "off"})
    role = SelectField("Role", choices=ROLE_CHOICES)
    password = PasswordField(
        "Initial password (new users only)",
        validators=[Optional(), Length(max=1024)],
        render_kw={"autocomplete": "new-password"},
    )
