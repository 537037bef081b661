"""Billing works with any user model (Django's auth.User with a username, or an email-login model):
users are named by `get_username()` and found by their login name (USERNAME_FIELD) or email."""

from django.contrib.auth import get_user_model


def lookup_fields(User=None) -> list[str]:
    """The fields a person may name a user by: the login name, then the email when it is another field."""
    User = User or get_user_model()
    fields = [User.USERNAME_FIELD]
    email = User.get_email_field_name()
    if email != User.USERNAME_FIELD and email in {f.name for f in User._meta.get_fields()}:
        fields.append(email)
    return fields


def email_field(User=None) -> str | None:
    User = User or get_user_model()
    name = User.get_email_field_name()
    return name if name in {f.name for f in User._meta.get_fields()} else None


def display_name(user) -> str:
    return user.get_username() if user is not None else ""
