from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length, Optional


class ConnectForm(FlaskForm):
    device = SelectField("Device", choices=[], validate_choice=False,
                         validators=[InputRequired("Choose a device.")])
    run_as = StringField("Connect as a specific user (optional)",
                         validators=[Optional(), Length(max=256)],
                         render_kw={"autocomplete": "off", "placeholder": "e.g. CORP\\jsmith"})
    reason = TextAreaField("Reason (optional)", validators=[Optional(), Length(max=1000)],
                           render_kw={"rows": 2, "maxlength": 1000})
