from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, PasswordField
from wtforms.validators import DataRequired, Email, EqualTo, Length

from webapp.accounts import PASSWORD_MAX, PASSWORD_MIN

PASSWORD_LENGTH = f"Use {PASSWORD_MIN} to {PASSWORD_MAX} characters."

EMAIL = [DataRequired("Enter your email."), Length(max=254), Email("Enter a valid email address.")]


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL)
    password = PasswordField("Password", validators=[DataRequired("Enter your password."),
                                                     Length(max=PASSWORD_MAX)])
    remember = BooleanField("Keep me signed in")
    next = HiddenField()


class RegisterForm(FlaskForm):
    email = EmailField("Email", validators=EMAIL)
    password = PasswordField(
        "Password",
        validators=[DataRequired("Choose a password."),
                    Length(PASSWORD_MIN, PASSWORD_MAX, PASSWORD_LENGTH)],
    )
    confirm = PasswordField(
        "Repeat password", validators=[EqualTo("password", "The passwords do not match.")]
    )
