from django.contrib import admin

from media.models import Attachment


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin[Attachment]):
    list_display = ("id", "uploader", "kind", "status", "content_type", "size", "filename", "message", "created_at")
    list_filter = ("kind", "status")
    search_fields = ("filename", "uploader__username", "sha256")
    raw_id_fields = ("uploader", "message")
    readonly_fields = ("key", "thumbnail_key", "sha256", "size", "content_type", "created_at", "processed_at")
