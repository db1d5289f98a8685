from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, SelectField, StringField
from wtforms.validators import InputRequired, Length, Optional


def _group_id(value):
    return int(value) if value not in (None, "", "None") else None


class DeviceForm(FlaskForm):
    name = StringField("Device name", validators=[InputRequired("Enter a name."), Length(max=100)],
                       render_kw={"placeholder": "WIN-0859G9I39J0", "autocomplete": "off"})
    os = StringField("OS", validators=[Optional(), Length(max=100)],
                     render_kw={"placeholder": "Windows 11 Pro"})
    ip_address = StringField("IP address", validators=[Optional(), Length(max=45)],
                             render_kw={"placeholder": "10.0.0.12", "inputmode": "decimal"})
    group_id = SelectField("Group", coerce=_group_id, choices=[], validate_choice=False)


class GroupForm(FlaskForm):
    name = StringField("Group name", validators=[InputRequired("Enter a name."), Length(max=100)],
                       render_kw={"placeholder": "QA Team"})


class DeleteForm(FlaskForm):
    confirm = BooleanField("Yes, delete it", validators=[InputRequired("Tick the box to confirm.")])


class GenerateOtpForm(FlaskForm):
    username = StringField("User name", validators=[InputRequired("Enter the user name."),
                                                    Length(max=256)],
                           render_kw={"placeholder": "jsmith", "autocomplete": "off"})
    email = EmailField("Email", validators=[InputRequired("Enter the address to send it to."),
                                            Length(max=254)],
                       render_kw={"placeholder": "j.smith@example.com", "autocomplete": "off"})
    comment = StringField("Comment", validators=[Optional(), Length(max=500)],
                          render_kw={"autocomplete": "off"})
