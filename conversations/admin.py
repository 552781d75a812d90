"""Admin views of conversations; moderation/admin.py extends them with the moderators' pages."""

from django.contrib import admin

from conversations.models import Conversation, Membership, Message


class MembershipInline(admin.TabularInline[Membership, Conversation]):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "joined_at", "joined_seq", "left_at", "delivered_seq", "read_seq", "muted_until")
    readonly_fields = ("joined_at", "joined_seq", "delivered_seq", "read_seq")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ("id", "kind", "title", "last_seq", "last_message_at", "created_at")
    list_filter = ("kind",)
    search_fields = ("title",)
    readonly_fields = ("direct_key", "last_seq", "version", "last_message_at", "created_at", "created_by")
    inlines = (MembershipInline,)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = ("id", "conversation", "seq", "sender", "kind", "created_at", "edited_at", "deleted_at")
    list_filter = ("kind",)
    search_fields = ("body", "sender__username")
    raw_id_fields = ("conversation", "sender", "reply_to")
    readonly_fields = ("seq", "version", "client_msg_id", "created_at")
    list_select_related = ("conversation", "sender")
