from django.urls import path

from notifications.api import views

urlpatterns = [
    path("push/config/", views.PushConfigView.as_view(), name="api-push-config"),
    path("push/subscriptions/", views.SubscriptionsView.as_view(), name="api-push-subscriptions"),
    path("push/subscriptions/<int:subscription_id>/", views.SubscriptionView.as_view(), name="api-push-subscription"),
    path("push/deliveries/", views.DeliveriesView.as_view(), name="api-push-deliveries"),
    path("push/preferences/", views.PreferencesView.as_view(), name="api-push-preferences"),
    path("conversations/<int:conversation_id>/mute/", views.MuteView.as_view(), name="api-conversation-mute"),
]
