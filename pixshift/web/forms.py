"""WTForms (via Flask-WTF): every form carries a CSRF token."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length, Optional


class UploadForm(FlaskForm):
    file = FileField("Product CSV", validators=[FileRequired("Choose a CSV file.")])
    webhook_url = StringField("Webhook URL (optional)", validators=[Optional(), Length(max=2048)])


class WebhookForm(FlaskForm):
    url = StringField("Endpoint URL", validators=[DataRequired(), Length(max=2048)])
    description = StringField("Description", validators=[Optional(), Length(max=255)])


class ActionForm(FlaskForm):
    """A button that changes something (delete, resend): only the CSRF token."""


class LoginForm(FlaskForm):
    token = PasswordField("API token", validators=[DataRequired()])
