"""Rendering billing's pages inside the project's layout (docs/INSTALL.md, "Templates").

billing/base.html extends the template this names: BILLING_BASE_TEMPLATE, or billing's own
stand-alone layout when the project has no template of the default name, so a fresh project
shows finished pages. A BILLING_BASE_TEMPLATE the project named but that does not exist is a
system check error (billing.E011), not a silent fallback.
"""

from django.shortcuts import render
from django.template import TemplateDoesNotExist
from django.template.loader import get_template, select_template

from billing.conf import DEFAULTS, app_settings

STANDALONE_TEMPLATE = "billing/standalone.html"


def base_template():
    """The template billing/base.html extends (a name, or the loaded template)."""
    name = app_settings.BILLING_BASE_TEMPLATE
    if name == DEFAULTS["BILLING_BASE_TEMPLATE"]:
        return select_template([name, STANDALONE_TEMPLATE])
    return name


def base_template_exists(name: str) -> bool:
    try:
        get_template(name)
    except TemplateDoesNotExist:
        return False
    return True


def render_page(request, template_name: str, context: dict, status: int | None = None):
    context = {"billing_base_template": base_template(), "home_url": app_settings.BILLING_HOME_URL, **context}
    return render(request, template_name, context, status=status)
