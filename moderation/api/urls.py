from django.urls import path

from moderation.api import views

urlpatterns = [
    path("reports/", views.ReportsView.as_view(), name="api-reports"),
    path("blocks/", views.BlocksView.as_view(), name="api-blocks"),
    path("blocks/<int:user_id>/", views.BlockView.as_view(), name="api-block"),
]
