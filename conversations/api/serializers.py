"""Request shapes (validated) and response shapes (documented) of the conversations API.

Responses are built by conversations.events so that REST and WebSocket agree; the
response serializers here describe those payloads for the OpenAPI schema.
"""

from __future__ import annotations

from rest_framework import serializers

from accounts.api.serializers import PublicUserSerializer
from conversations.models import Conversation, Membership


class ReactionSchema(serializers.Serializer[None]):
    user_id = serializers.IntegerField()
    emoji = serializers.CharField()


class AttachmentSchema(serializers.Serializer[None]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["image", "video", "audio", "file"])
    status = serializers.ChoiceField(
        choices=["processing", "ready"], help_text="Thumbnails and sizes arrive when ready."
    )
    content_type = serializers.CharField(help_text="Sniffed from the bytes.")
    size = serializers.IntegerField()
    filename = serializers.CharField()
    width = serializers.IntegerField(allow_null=True)
    height = serializers.IntegerField(allow_null=True)
    duration = serializers.FloatField(allow_null=True, help_text="Seconds, for audio and video.")
    has_thumbnail = serializers.BooleanField()


class MessageSchema(serializers.Serializer[None]):
    id = serializers.IntegerField()
    conversation_id = serializers.IntegerField()
    seq = serializers.IntegerField(help_text="Position in the conversation: gap-free, one order for all.")
    version = serializers.IntegerField(help_text="The conversation version of this message's last change.")
    sender_id = serializers.IntegerField(allow_null=True)
    client_msg_id = serializers.CharField(allow_null=True)
    kind = serializers.ChoiceField(choices=["text", "system"])
    body = serializers.CharField(allow_blank=True)
    meta = serializers.JSONField(allow_null=True, help_text="For system messages: what happened.")
    reply_to = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()
    edited_at = serializers.DateTimeField(allow_null=True)
    deleted = serializers.BooleanField()
    hidden = serializers.BooleanField(help_text="Hidden by a moderator: a tombstone like a deleted message.")
    reactions = ReactionSchema(many=True)
    attachments = AttachmentSchema(many=True)


class MessagePageSchema(serializers.Serializer[None]):
    messages = MessageSchema(many=True)
    has_more = serializers.BooleanField()


class ConversationSchema(serializers.Serializer[None]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Conversation.Kind.choices)
    title = serializers.CharField(help_text="The group's title, or the other person's name in a direct chat.")
    peer = PublicUserSerializer(allow_null=True, help_text="The other person of a direct chat.")
    last_seq = serializers.IntegerField()
    version = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Membership.Role.choices)
    joined_seq = serializers.IntegerField()
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField()
    muted_until = serializers.DateTimeField(allow_null=True)
    unread_count = serializers.IntegerField()
    member_count = serializers.IntegerField()
    last_message_at = serializers.DateTimeField(allow_null=True)
    last_message = MessageSchema(allow_null=True)


class MemberSchema(serializers.Serializer[None]):
    user = PublicUserSerializer()
    role = serializers.ChoiceField(choices=Membership.Role.choices)
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField()


class ConversationDetailSchema(ConversationSchema):
    members = MemberSchema(many=True)


class CreateConversationSerializer(serializers.Serializer[None]):
    kind = serializers.ChoiceField(choices=Conversation.Kind.choices)
    user_id = serializers.IntegerField(required=False, help_text="For a direct chat: the other person.")
    title = serializers.CharField(required=False, max_length=128)
    member_ids = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        if attrs["kind"] == Conversation.Kind.DIRECT and attrs.get("user_id") is None:
            raise serializers.ValidationError({"user_id": ["Required for a direct chat."]})
        if attrs["kind"] == Conversation.Kind.GROUP and not attrs.get("title"):
            raise serializers.ValidationError({"title": ["Required for a group."]})
        return attrs


class AddMembersSerializer(serializers.Serializer[None]):
    user_ids = serializers.ListField(child=serializers.IntegerField(), min_length=1, max_length=1024)


class RoleSerializer(serializers.Serializer[None]):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class SendMessageSerializer(serializers.Serializer[None]):
    client_msg_id = serializers.CharField(
        max_length=64, trim_whitespace=False, help_text="Your idempotency key: a retry returns the original."
    )
    body = serializers.CharField(allow_blank=True, trim_whitespace=False, required=False, default="")
    reply_to = serializers.IntegerField(required=False, allow_null=True)
    attachment_ids = serializers.ListField(
        child=serializers.IntegerField(), required=False, max_length=10, help_text="Uploaded attachments to send."
    )


class EditMessageSerializer(serializers.Serializer[None]):
    body = serializers.CharField(trim_whitespace=False)


class ReactionSerializer(serializers.Serializer[None]):
    emoji = serializers.CharField(max_length=16)


class CursorSerializer(serializers.Serializer[None]):
    seq = serializers.IntegerField(min_value=0)


class CursorStateSchema(serializers.Serializer[None]):
    conversation_id = serializers.IntegerField()
    user_id = serializers.IntegerField()
    delivered_seq = serializers.IntegerField()
    read_seq = serializers.IntegerField()


class HistoryQuerySerializer(serializers.Serializer[None]):
    before_seq = serializers.IntegerField(required=False, min_value=0)
    after_seq = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=50)


class MessageInfoMemberSchema(serializers.Serializer[None]):
    user_id = serializers.IntegerField()
    delivered = serializers.BooleanField()
    read = serializers.BooleanField()


class MessageInfoSchema(serializers.Serializer[None]):
    message_id = serializers.IntegerField()
    members = MessageInfoMemberSchema(many=True)
