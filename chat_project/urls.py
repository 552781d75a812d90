"""URL map: browser pages, the REST API under /api/v1/, its schema, admin and probes."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import views as account_views
from chat_project import errors, health

urlpatterns = [
    path("", account_views.home_view, name="home"),
    path("signup/", account_views.signup_view, name="signup"),
    path("login/", account_views.login_view, name="login"),
    path("logout/", account_views.logout_view, name="logout"),
    path("sw.js", account_views.service_worker_view, name="service-worker"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/", include("conversations.api.urls")),
    path("api/v1/", include("media.api.urls")),
    path("api/v1/", include("notifications.api.urls")),
    path("api/v1/", include("moderation.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]


def _api_not_found(request: HttpRequest) -> HttpResponse:
    return errors.api_not_found(request)


# Unknown paths under /api/ answer in the API's error shape rather than an HTML page.
urlpatterns.append(re_path(r"^api/", _api_not_found))
