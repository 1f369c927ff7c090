"""Dashboard forms; validation of meaning stays in manage.* (its ManageError messages are shown inline)."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    DecimalField,
    EmailField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from .. import manage
from ..models import MODEL_ENDPOINTS


def options(pairs) -> list[SelectChoice]:
    """Select options from (value, label) pairs or plain values."""
    return [SelectChoice(*p) if isinstance(p, tuple) else SelectChoice(p) for p in pairs]


PERIOD_CHOICES = options([("", "—"), *manage.PERIODS])


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class SetupForm(FlaskForm):
    """The first administrator, authorised by the one-time token."""

    token = PasswordField("Set-up token", validators=[DataRequired(), Length(max=256)],
                          description="Printed by the server at start.")
    name = StringField("Your user name", validators=[DataRequired(), Length(max=64)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=1024)],
                             description="At least 8 characters.")


class LimitsMixin:
    """Limits and allow-lists shared by user forms."""

    all_models = BooleanField("Every model (present and future)")
    allowed_models = SelectMultipleField("Allowed models", choices=[], validate_choice=False)
    all_prompts = BooleanField("Every prompt (present and future)")
    allowed_prompts = SelectMultipleField("Allowed prompts", choices=[], validate_choice=False)
    rpm = IntegerField("Requests per minute", validators=[Optional(), NumberRange(min=0)],
                       description="Empty or 0: no limit.")
    tpm = IntegerField("Tokens per minute", validators=[Optional(), NumberRange(min=0)])
    max_concurrent = IntegerField("Concurrent requests", validators=[Optional(), NumberRange(min=0)])
    budget = DecimalField("Budget (USD)", places=None, validators=[Optional(), NumberRange(min=0)])
    period = SelectField("Budget period", choices=PERIOD_CHOICES, default="")


class GroupsMixin:
    """The groups a user belongs to (their grants widen the user's access; their limits also apply)."""

    groups = SelectMultipleField("Groups", choices=[], validate_choice=False,
                                 description="Access is the union of the user's and their groups' grants.")


class GroupForm(LimitsMixin, FlaskForm):
    """Create or change a group."""

    name = StringField("Name", validators=[DataRequired(), Length(max=64)])
    description = StringField("Description", validators=[Optional(), Length(max=256)])


class UserForm(GroupsMixin, LimitsMixin, FlaskForm):
    """Create a user."""

    name = StringField("Name", validators=[DataRequired(), Length(max=64)])
    email = EmailField("Email", validators=[Optional(), Length(max=254)])
    role = SelectField("Role", choices=options(manage.ROLES), default="member")
    password = PasswordField("Password", validators=[Optional(), Length(min=8, max=1024)],
                             description="Lets the user log in to the dashboard. At least 8 characters.")


class UserEditForm(GroupsMixin, LimitsMixin, FlaskForm):
    """Change a user (the name is fixed; it is how the CLI and logs refer to them)."""

    email = EmailField("Email", validators=[Optional(), Length(max=254)])
    role = SelectField("Role", choices=options(manage.ROLES), default="member")
    active = BooleanField("Active")
    password = PasswordField("New password", validators=[Optional(), Length(min=8, max=1024)],
                             description="Leave empty to keep. Changing it ends the user's sessions.")


class KeyForm(FlaskForm):
    """A new key."""

    name = StringField("Name", validators=[Optional(), Length(max=64)], description="What it is for.")
    user = SelectField("User", choices=[], validate_choice=False)
    expires = DateField("Expires", validators=[Optional()], description="Optional, UTC.")
    tags = StringField("Default tags", validators=[Optional(), Length(max=1000)],
                       description="Comma-separated; added to every request made with this key.")


class ProviderForm(FlaskForm):
    """An upstream API; the secret is write-only."""

    name = StringField("Name", validators=[DataRequired(), Length(max=64)])
    kind = SelectField("Kind", choices=[])
    base_url = StringField("Base URL", validators=[DataRequired(), Length(max=512)],
                           description="e.g. https://api.openai.com/v1")
    api_key = PasswordField("API key", validators=[Optional(), Length(max=4096)])
    clear_key = BooleanField("Remove the stored key")
    first_byte_timeout = DecimalField("First-byte timeout (s)", places=None, validators=[Optional()])
    total_timeout = DecimalField("Overall timeout (s)", places=None, validators=[Optional()])
    responses_api = BooleanField("Speaks the Responses API",
                                 description="/v1/responses bodies pass through (OpenAI-compatible kinds only); "
                                             "otherwise they are translated to chat completions.")
    reasoning_effort = BooleanField("Takes reasoning_effort",
                                    description="Claude Code's thinking and Responses' reasoning.effort map to "
                                                "chat's reasoning_effort; otherwise they are dropped.")
    enabled = BooleanField("Enabled", default=True)


class ModelForm(FlaskForm):
    """A public model slug mapped to a provider's model."""

    slug = StringField("Slug", validators=[DataRequired(), Length(max=128)],
                       description="What clients send as `model`.")
    provider = SelectField("Provider", choices=[], validate_choice=False)
    upstream_model = StringField("Upstream model", validators=[DataRequired(), Length(max=256)])
    kind = SelectField("Kind", choices=options(manage.MODEL_KINDS))
    endpoints = SelectMultipleField("Endpoints", choices=options(MODEL_ENDPOINTS),
                                    description="None chosen: the kind's default (chat models serve chat and "
                                                "completions).")
    input_price = DecimalField("Input price (USD / 1M tokens)", places=None, validators=[Optional()])
    output_price = DecimalField("Output price (USD / 1M tokens)", places=None, validators=[Optional()])
    cached_input_price = DecimalField("Cached input price", places=None, validators=[Optional()])
    fallbacks = StringField("Fallbacks", validators=[Optional(), Length(max=1024)],
                            description="Model slugs, comma-separated, tried in order.")
    enabled = BooleanField("Enabled", default=True)


class PromptForm(FlaskForm):
    """A stored system prompt; a text change saves a new version."""

    slug = StringField("Slug", validators=[DataRequired(), Length(max=128)],
                       description="Used as `model:slug`.")
    description = StringField("Description", validators=[Optional(), Length(max=1000)])
    mode = SelectField("Injection mode", choices=options(manage.PROMPT_MODES))
    text = TextAreaField("Text", validators=[DataRequired()], render_kw={"rows": 8})
    note = StringField("Version note", validators=[Optional(), Length(max=256)])
    cache_ttl = IntegerField("Response cache TTL (seconds)",
                             validators=[Optional(), NumberRange(min=0, max=manage.MAX_CACHE_TTL)],
                             description="Set: calls using this prompt reuse identical answers this long, whatever "
                                         "their model's cache. Empty or 0: the model's cache setting applies.")
    cache_scope = SelectField("Cache scope", default="user",
                              choices=options([("user", "per user"), ("shared", "shared by everyone")]))
    mcp = BooleanField("Offer over MCP",
                       description="/mcp prompts/list and prompts/get hand its text to every key that may use it; "
                                   "unticked, MCP clients never see it.")
