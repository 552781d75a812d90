"""Request shapes (validated) and response shapes (documented) of the push API."""

from __future__ import annotations

from rest_framework import serializers

from notifications.models import PushDelivery, PushSubscription


class PushConfigSchema(serializers.Serializer[None]):
    vapid_public_key = serializers.CharField(
        help_text="The server's VAPID public key: the uncompressed P-256 point, base64url without padding. "
        "Pass it as applicationServerKey to pushManager.subscribe()."
    )
    kinds = serializers.ListField(
        child=serializers.ChoiceField(choices=PushSubscription.Kind.choices),
        help_text="The kinds of subscription this server can push to.",
    )


class WebPushKeysSerializer(serializers.Serializer[None]):
    p256dh = serializers.CharField(max_length=128)
    auth = serializers.CharField(max_length=64)


class SubscribeSerializer(serializers.Serializer[None]):
    kind = serializers.ChoiceField(choices=PushSubscription.Kind.choices)
    endpoint = serializers.CharField(
        required=False, max_length=2048, help_text="Web Push: the subscription's endpoint (https)."
    )
    keys = WebPushKeysSerializer(
        required=False, help_text="Web Push: the subscription's keys, as the browser gives them."
    )
    token = serializers.CharField(
        required=False, max_length=512, help_text="FCM registration token or APNs device token."
    )


class SubscriptionSchema(serializers.Serializer[None]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=PushSubscription.Kind.choices)
    device_id = serializers.IntegerField()
    endpoint = serializers.CharField(allow_blank=True)
    token = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    last_success_at = serializers.DateTimeField(allow_null=True, help_text="When a push service last accepted a push.")


class DeliveryQuerySerializer(serializers.Serializer[None]):
    message_id = serializers.IntegerField(required=False, help_text="Only the decisions for this message.")
    device_id = serializers.IntegerField(required=False, help_text="Only the decisions for this device of yours.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=50)


class DeliverySchema(serializers.Serializer[None]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=PushDelivery.Kind.choices)
    message_id = serializers.IntegerField(allow_null=True)
    conversation_id = serializers.IntegerField()
    device_id = serializers.IntegerField()
    seq = serializers.IntegerField(help_text="The seq the push described (for a clear: read up to here).")
    status = serializers.ChoiceField(choices=PushDelivery.Status.choices)
    reason = serializers.ChoiceField(
        choices=PushDelivery.Reason.choices, allow_blank=True, help_text="Why it was suppressed or failed."
    )
    coalesced_into = serializers.IntegerField(allow_null=True, help_text="The push that carried this message.")
    preview = serializers.BooleanField(help_text="Whether the push carried the message text.")
    attempts = serializers.IntegerField()
    response_status = serializers.IntegerField(allow_null=True, help_text="The push service's last HTTP status.")
    created_at = serializers.DateTimeField()
    sent_at = serializers.DateTimeField(allow_null=True)
    accepted_at = serializers.DateTimeField(allow_null=True)


class PreferencesSerializer(serializers.Serializer[None]):
    enabled = serializers.BooleanField(required=False, help_text="Push notifications at all.")
    previews = serializers.BooleanField(
        required=False, help_text='Show the message text, or only "New message" (privacy).'
    )


class MuteSerializer(serializers.Serializer[None]):
    until = serializers.CharField(
        required=False, allow_null=True, default=None, help_text="ISO 8601 time with a time zone; null to unmute."
    )
    forever = serializers.BooleanField(required=False, default=False)


class MuteStateSchema(serializers.Serializer[None]):
    conversation_id = serializers.IntegerField()
    muted_until = serializers.DateTimeField(allow_null=True, help_text="Forever is 9999-12-31T23:59:59Z.")
