"""Request shapes (validated) and response shapes (documented) of the moderation API."""

from __future__ import annotations

from rest_framework import serializers

from accounts.api.serializers import PublicUserSerializer
from moderation.models import Report


class ReportCreateSerializer(serializers.Serializer[None]):
    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    details = serializers.CharField(
        max_length=1000, required=False, allow_blank=True, default="", help_text="What happened, in your words."
    )
    conversation_id = serializers.IntegerField(
        required=False, allow_null=True, help_text="The conversation of the message (or where a user misbehaved)."
    )
    message_id = serializers.IntegerField(required=False, allow_null=True, help_text="The message to report.")
    user_id = serializers.IntegerField(required=False, allow_null=True, help_text="The user to report.")

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if attrs.get("message_id") is None and attrs.get("user_id") is None:
            raise serializers.ValidationError(
                {"message_id": ["Report a message (with its conversation_id) or a user_id."]}
            )
        return attrs


class ReportSchema(serializers.Serializer[None]):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Report.Status.choices)
    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    conversation_id = serializers.IntegerField(allow_null=True)
    message_id = serializers.IntegerField(allow_null=True)
    user_id = serializers.IntegerField(allow_null=True, help_text="The reported user (the message's sender).")
    created_at = serializers.DateTimeField()


class BlockSchema(serializers.Serializer[None]):
    user = PublicUserSerializer()
    created_at = serializers.DateTimeField()
