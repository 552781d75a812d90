"""Browser pages for signing up, logging in and out: thin, form -> service -> redirect."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import login, logout
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import services
from accounts.forms import LoginForm, SignupForm
from accounts.models import Device, User
from accounts.selectors import DEVICE_SESSION_KEY
from accounts.throttling import client_ip
from chat_project.errors import ApplicationError, RateLimited


def _start_session(request: HttpRequest, user: User) -> HttpResponse:
    """Log the browser in as a new web device, then go where it was heading."""
    login(request, user, backend="accounts.backends.AccountBackend")
    device = services.register_device(
        user=user, platform=Device.Platform.WEB, name=request.headers.get("User-Agent", "")[:100]
    )
    request.session[DEVICE_SESSION_KEY] = device.pk
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect("home")


def _form_errors(form: SignupForm | LoginForm, error: ApplicationError) -> None:
    for field, messages in error.fields.items():
        for message in messages:
            form.add_error(field if field in form.fields else None, message)
    if not error.fields:
        form.add_error(None, error.detail)


@require_http_methods(["GET", "POST"])
def signup_view(request: HttpRequest) -> HttpResponse:
    """Create an account and log in."""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.register_user(**form.cleaned_data)
        except ApplicationError as exc:
            _form_errors(form, exc)
        else:
            return _start_session(request, user)
    return render(request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    """Log in with username and password; throttled like the API."""
    form = LoginForm(request.POST or None)
    retry_after = None
    if request.method == "POST" and form.is_valid():
        try:
            user = services.check_login(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password"],
                ip=client_ip(request),
                request=request,
            )
        except RateLimited as exc:
            retry_after = exc.retry_after
            _form_errors(form, exc)
        except ApplicationError as exc:
            _form_errors(form, exc)
        else:
            return _start_session(request, user)
    status = 429 if retry_after else (400 if form.errors else 200)
    response = render(request, "accounts/login.html", {"form": form}, status=status)
    if retry_after:
        response["Retry-After"] = str(retry_after)
    return response


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    """Log out: the session ends, its device is revoked and its sockets close."""
    user = request.user
    device_id = request.session.get(DEVICE_SESSION_KEY)
    if isinstance(user, User) and device_id is not None:
        services.revoke_device_of(user=user, device_id=device_id)
    logout(request)
    return redirect("login")


@login_required
def home_view(request: HttpRequest) -> HttpResponse:
    """The chat app's shell: static/js/app.js fills it in (docs/architecture.md, "Web UI")."""
    return render(request, "home.html")


SERVICE_WORKER = "js/sw.js"


def _service_worker_source() -> bytes:
    found = finders.find(SERVICE_WORKER)
    if isinstance(found, str):
        return Path(found).read_bytes()
    if staticfiles_storage.exists(SERVICE_WORKER):  # collected, without the source tree
        with staticfiles_storage.open(SERVICE_WORKER) as file:
            data: bytes = file.read()
            return data
    raise Http404("No service worker.")


@require_GET
def service_worker_view(request: HttpRequest) -> HttpResponse:
    """static/js/sw.js served at /sw.js: a worker's scope can only cover the path it is
    served under (or what Service-Worker-Allowed grants), and the app lives at "/"."""
    response = HttpResponse(_service_worker_source(), content_type="text/javascript; charset=utf-8")
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"  # browsers revalidate it, so a deploy reaches them
    return response
