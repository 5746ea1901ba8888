"""The settings page's form: a new hook's name."""

from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from webapp.hooks.service import NAME_MAX


class HookForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Name the hook."), Length(max=NAME_MAX)])
