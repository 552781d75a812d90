"""Admin views of push notifications: what operators read when a user says "I got no notification"."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from notifications import services
from notifications.models import DeadLetter, PushDelivery, PushOutbox, PushPreference, PushSubscription


class ReadOnly:
    """For rows written only by the push machinery (operators may still delete them)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PushSubscription)
class PushSubscriptionAdmin(admin.ModelAdmin[PushSubscription]):
    list_display = ("id", "user", "device", "kind", "target", "created_at", "last_success_at")
    list_filter = ("kind",)
    search_fields = ("user__username", "endpoint", "token")
    raw_id_fields = ("user", "device")
    readonly_fields = ("created_at", "last_success_at")
    list_select_related = ("user", "device")


@admin.register(PushPreference)
class PushPreferenceAdmin(admin.ModelAdmin[PushPreference]):
    list_display = ("user", "enabled", "previews", "updated_at")
    list_filter = ("enabled", "previews")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)


DELIVERY_FIELDS = (
    "id",
    "kind",
    "message",
    "conversation",
    "user",
    "device",
    "status",
    "reason",
    "attempts",
    "response_status",
    "created_at",
    "accepted_at",
)


@admin.register(PushDelivery)
class PushDeliveryAdmin(ReadOnly, admin.ModelAdmin[PushDelivery]):
    list_display = DELIVERY_FIELDS
    list_filter = ("status", "reason", "kind")
    search_fields = ("=message__id", "=conversation__id", "user__username")
    raw_id_fields = ("message", "conversation", "user", "device", "subscription", "coalesced_into")
    list_select_related = ("user",)
    date_hierarchy = "created_at"


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnly, admin.ModelAdmin[DeadLetter]):
    list_display = (*DELIVERY_FIELDS, "error")
    list_filter = ("kind",)
    search_fields = ("=message__id", "user__username", "error")
    raw_id_fields = PushDeliveryAdmin.raw_id_fields
    list_select_related = ("user",)
    actions = ("retry_now",)

    @admin.action(description="Retry the selected pushes now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        count = services.retry_dead_letters(delivery_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} pushes are being retried.", messages.SUCCESS)


@admin.register(PushOutbox)
class PushOutboxAdmin(ReadOnly, admin.ModelAdmin[PushOutbox]):
    list_display = ("id", "kind", "conversation", "message", "user", "seq", "created_at", "sweeps", "next_sweep_at")
    list_filter = ("kind",)
    raw_id_fields = ("conversation", "message", "user")
