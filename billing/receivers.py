from django.db.models.signals import post_save
from django.dispatch import receiver

from billing.conf import app_settings
from billing.models import Profile


@receiver(post_save, sender=app_settings.AUTH_USER_MODEL, dispatch_uid="billing.create_profile")
def create_profile(sender, instance, created, raw=False, **kwargs):
    """Every user has a Profile from the moment it exists (fixtures load their own)."""
    if created and not raw:
        Profile.objects.get_or_create(user=instance)
