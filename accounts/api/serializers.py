"""Request and response shapes of the accounts API (validation of untrusted input only)."""

from __future__ import annotations

from rest_framework import serializers

from accounts.models import Device, User


class PublicUserSerializer(serializers.ModelSerializer[User]):
    """What anyone may know about a user."""

    class Meta:
        model = User
        fields = ("id", "username", "display_name")
        read_only_fields = fields


class MeSerializer(serializers.ModelSerializer[User]):
    """The logged-in user's own account."""

    class Meta:
        model = User
        fields = ("id", "username", "display_name", "last_seen_visibility", "date_joined")
        read_only_fields = ("id", "username", "date_joined")


class RegisterSerializer(serializers.Serializer[None]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, write_only=True, trim_whitespace=False)
    display_name = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")


class TokenObtainSerializer(serializers.Serializer[None]):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, write_only=True, trim_whitespace=False)
    platform = serializers.ChoiceField(choices=Device.Platform.choices, default=Device.Platform.OTHER)
    device_name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class RefreshSerializer(serializers.Serializer[None]):
    refresh = serializers.CharField(max_length=4096)


class TokenPairSerializer(serializers.Serializer[None]):
    access = serializers.CharField(help_text="JWT access token; send as 'Authorization: Bearer <access>'.")
    refresh = serializers.CharField(help_text="Single-use refresh token; rotating it returns a new pair.")


class LoginResponseSerializer(TokenPairSerializer):
    device_id = serializers.IntegerField(help_text="This install's device id; tokens are bound to it.")
    user = PublicUserSerializer()


class UserSearchQuerySerializer(serializers.Serializer[None]):
    q = serializers.CharField(max_length=64, allow_blank=True, default="")
    limit = serializers.IntegerField(min_value=1, max_value=50, default=20)
