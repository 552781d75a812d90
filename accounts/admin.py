from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from accounts.models import Device, User


# moderation/admin.py re-registers this admin with the moderators' pages (suspend, ban).
@admin.register(User)
class UserAdmin(DjangoUserAdmin[User]):
    list_display = ("username", "display_name", "is_active", "is_staff", "date_joined", "last_seen")
    search_fields = ("username", "display_name", "email")
    fieldsets = (
        *(DjangoUserAdmin.fieldsets or ()),
        ("Profile", {"fields": ("display_name", "last_seen", "last_seen_visibility")}),
    )
    readonly_fields = ("last_seen",)


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin[Device]):
    list_display = ("id", "user", "platform", "name", "created_at", "last_seen_at", "revoked_at")
    list_filter = ("platform",)
    search_fields = ("user__username", "name")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at", "last_seen_at")
