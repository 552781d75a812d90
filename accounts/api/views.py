"""Accounts REST endpoints: thin, parse -> service -> serialize."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.api.serializers import (
    LoginResponseSerializer,
    MeSerializer,
    PublicUserSerializer,
    RefreshSerializer,
    RegisterSerializer,
    TokenObtainSerializer,
    TokenPairSerializer,
    UserSearchQuerySerializer,
)
from accounts.models import User
from accounts.throttling import ClientAddressRateThrottle, client_ip


def authenticated_user(request: Request) -> User:
    """The request's user; the view's permission has already refused anonymous requests."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated()
    return user


def validated(serializer_class: type[Any], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


class PublicEndpoint(APIView):
    """Reached without credentials (and so without session CSRF)."""

    authentication_classes = ()
    permission_classes = (AllowAny,)


class RegisterView(PublicEndpoint):
    throttle_classes = (ClientAddressRateThrottle,)
    throttle_scope = "register"

    @extend_schema(request=RegisterSerializer, responses={201: PublicUserSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        """Create an account. Usernames are unique regardless of case."""
        data = validated(RegisterSerializer, request.data)
        user = services.register_user(**data)
        return Response(PublicUserSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenObtainView(PublicEndpoint):
    @extend_schema(request=TokenObtainSerializer, responses={200: LoginResponseSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        """Log an app in: registers a device and returns its JWT pair.

        Repeated failures for one username or one address answer 429 with Retry-After.
        """
        data = validated(TokenObtainSerializer, request.data)
        device, tokens = services.login_app(
            username=data["username"],
            password=data["password"],
            ip=client_ip(request),
            platform=data["platform"],
            device_name=data["device_name"],
        )
        body = {**tokens, "device_id": device.pk, "user": PublicUserSerializer(device.user).data}
        return Response(body)


class TokenRefreshView(PublicEndpoint):
    @extend_schema(request=RefreshSerializer, responses={200: TokenPairSerializer}, tags=["auth"])
    def post(self, request: Request) -> Response:
        """Rotate a refresh token: returns a new pair; the old refresh token stops working."""
        data = validated(RefreshSerializer, request.data)
        return Response(services.rotate_tokens(raw_refresh=data["refresh"]))


class LogoutView(PublicEndpoint):
    @extend_schema(request=RefreshSerializer, responses={204: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        """Log this device out: its tokens stop working and its open sockets close (4401)."""
        data = validated(RefreshSerializer, request.data)
        services.logout_app(raw_refresh=data["refresh"])
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    @extend_schema(responses={200: MeSerializer}, tags=["users"])
    def get(self, request: Request) -> Response:
        """The logged-in user."""
        return Response(MeSerializer(authenticated_user(request)).data)

    @extend_schema(request=MeSerializer, responses={200: MeSerializer}, tags=["users"])
    def patch(self, request: Request) -> Response:
        """Change your display name or who may see your last-seen time."""
        data = validated(MeSerializer, request.data)
        user = services.update_profile(user=authenticated_user(request), **data)
        return Response(MeSerializer(user).data)


class UserSearchView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Prefix of a username or display name."),
            OpenApiParameter("limit", int, description="At most 50; default 20."),
        ],
        responses={200: PublicUserSerializer(many=True)},
        tags=["users"],
    )
    def get(self, request: Request) -> Response:
        """Find people to chat with, by the start of their username or display name."""
        query = validated(UserSearchQuerySerializer, request.query_params)
        users = selectors.search_users(q=query["q"], viewer=authenticated_user(request), limit=query["limit"])
        return Response(PublicUserSerializer(users, many=True).data)
