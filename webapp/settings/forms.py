from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from webapp.accounts import PASSWORD_MAX, PASSWORD_MIN

PASSWORD_LENGTH = f"Use {PASSWORD_MIN} to {PASSWORD_MAX} characters."


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(
        "Current password", validators=[DataRequired("Enter your current password."),
                                        Length(max=PASSWORD_MAX)]
    )
    new_password = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password."),
                    Length(PASSWORD_MIN, PASSWORD_MAX, PASSWORD_LENGTH)],
    )
    confirm = PasswordField(
        "Repeat new password", validators=[EqualTo("new_password", "The passwords do not match.")]
    )


class ApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Name the key."), Length(max=80)])
