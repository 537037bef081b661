from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models.functions import Lower


class UserManager(BaseUserManager):
    """Users are known by their email; there is no username."""

    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An email address is required")
        user = self.model(email=email, **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        if not extra_fields["is_staff"] or not extra_fields["is_superuser"]:
            raise ValueError("A superuser must have is_staff and is_superuser set")
        return self._create_user(email, password, **extra_fields)

    def get_by_email(self, email: str):
        """The user with this email, compared case-insensitively (raises DoesNotExist)."""
        return self.get(email__iexact=email.strip())


class User(AbstractUser):
    """A person who signs in with an email address (or Google); one email, one user."""

    username = None
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                name="accounts_user_email_ci_unique",
                violation_error_message="A user with this email address already exists.",
            )
        ]

    def __str__(self):
        return self.email

    @staticmethod
    def normalize(email: str) -> str:
        """One spelling per address: trimmed and lower-cased (allauth looks addresses up lower-cased)."""
        return (email or "").strip().lower()

    def clean(self):
        super().clean()
        self.email = self.normalize(self.email)

    def save(self, *args, **kwargs):
        self.email = self.normalize(self.email)
        super().save(*args, **kwargs)
