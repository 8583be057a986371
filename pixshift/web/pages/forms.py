"""WTForms (via Flask-WTF): every form carries a CSRF token."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional


class UploadForm(FlaskForm):
    file = FileField("Product CSV", validators=[FileRequired("Choose a CSV file.")])
    webhook_url = StringField("Webhook URL (optional)", validators=[Optional(), Length(max=2048)])


class WebhookForm(FlaskForm):
    url = StringField(
        "Endpoint URL",
        validators=[
            DataRequired("Enter the endpoint's web address, starting with https://."),
            Length(max=2048, message="That address is too long: at most 2048 characters."),
        ],
    )
    description = StringField(
        "Description (optional)",
        validators=[Optional(), Length(max=255, message="Keep the description to 255 characters or fewer.")],
    )


class ActionForm(FlaskForm):
    """A button that changes something (delete, resend): only the CSRF token."""


class LoginForm(FlaskForm):
    token = PasswordField("API token", validators=[DataRequired("Enter your API token.")])
