"""The sign-in, sign-up and account settings forms."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, EqualTo, Length, ValidationError

from webapp.accounts.service import PASSWORD_MAX, PASSWORD_MIN
from webapp.core import text

PASSWORD_LENGTH = f"Use {PASSWORD_MIN} to {PASSWORD_MAX} characters."

EMAIL = [DataRequired("Enter your email."), Length(max=254), Email("Enter a valid email address.")]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL)
    password = PasswordField("Password", validators=[DataRequired("Enter your password."),
                                                     Length(max=PASSWORD_MAX)])
    remember = BooleanField("Keep me signed in")
    next = HiddenField()
# A new password's box takes any length: with Length's maxlength the browser cuts a pasted
# long password there and not in the repeat box, and the page says they do not match; the
# server says "Use 8 to 128 characters." instead.
NO_MAXLENGTH = {"maxlength": False}


class RegisterForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL)
    password = PasswordField(
        "Password",
        validators=[DataRequired("Choose a password."),
                    Length(PASSWORD_MIN, PASSWORD_MAX, PASSWORD_LENGTH)],
        render_kw=NO_MAXLENGTH,
    )
    confirm = PasswordField(
        "Repeat password", validators=[EqualTo("password", "The passwords do not match.")]
    )


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(
        "Current password", validators=[DataRequired("Enter your current password."),
                                        Length(max=PASSWORD_MAX)]
    )
    new_password = PasswordField(
        "New password",
        validators=[DataRequired("Choose a new password."),
                    Length(PASSWORD_MIN, PASSWORD_MAX, PASSWORD_LENGTH)],
        render_kw=NO_MAXLENGTH,
    )
    confirm = PasswordField(
        "Repeat new password", validators=[EqualTo("new_password", "The passwords do not match.")]
    )


def one_line(form, field):
    if field.data and not text.is_line(field.data):
        raise ValidationError("Control characters are not allowed in a name.")


class ApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Name the key."), Length(max=80),
                                           one_line])
