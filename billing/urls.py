from django.urls import path

from billing import views, webhooks

app_name = "billing"

urlpatterns = [
    path("", views.billing_page, name="index"),
    path("receipts/<str:reference>/", views.receipt, name="receipt"),
    path("charge/", views.charge, name="charge"),
    path("charge/<int:payment_id>/confirm/", views.confirm_charge, name="charge_confirm"),
    path("charge/<int:payment_id>/resume/", views.resume_charge, name="charge_resume"),
    path("cards/", views.save_card, name="card_save"),
    path("cards/setup/", views.card_setup, name="card_setup"),
    path("cards/remove/", views.remove_card, name="card_remove"),
    path("auto-recharge/", views.auto_recharge, name="auto_recharge"),
    path("webhook/", webhooks.stripe_webhook, name="webhook"),
]
