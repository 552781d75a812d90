"""Media REST endpoints: upload, direct-upload (presigned), metadata and download."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import FileResponse, HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.views import authenticated_user, validated
from chat_project.errors import ApplicationError, InvalidInput
from conversations.api.serializers import AttachmentSchema
from conversations.events import attachment_payload
from media import selectors, services
from media.models import Attachment

TAGS = ["media"]


class SizeLimitHandler(FileUploadHandler):
    """Stops reading an upload once it passes the largest allowed size (no full read, no buffering)."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.received = 0
        self.exceeded = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > services.upload_limit():
            self.exceeded = True
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def _described(attachment: Attachment, request: Request) -> dict[str, Any]:
    """An attachment with URLs to fetch it (short-lived when they are presigned)."""
    payload = attachment_payload(attachment)
    base = request.build_absolute_uri(f"/api/v1/media/{attachment.pk}/download/")
    payload["url"] = base
    payload["thumbnail_url"] = f"{base}?variant=thumbnail" if attachment.thumbnail_key else None
    return payload


class UploadView(APIView):
    parser_classes = (MultiPartParser,)

    @extend_schema(
        request={"multipart/form-data": inline_serializer("Upload", {"file": serializers.FileField()})},
        responses={201: AttachmentSchema},
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        """Upload a file (up to the per-kind limit); attach it to a message with its id.

        Its type is sniffed from the bytes. Too large: 413 with code "too_large".
        """
        user = authenticated_user(request)
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > services.upload_limit() + 64 * 1024:  # refuse before reading the body
            raise services.TooLarge(f"Files are limited to {services.upload_limit() // (1024 * 1024)} MB.")
        limiter = SizeLimitHandler(request)
        handlers = request.upload_handlers
        if isinstance(handlers, list):  # still mutable: the body has not been read
            handlers.insert(0, limiter)
        upload = request.FILES.get("file")
        if limiter.exceeded:
            raise services.TooLarge(f"Files are limited to {services.upload_limit() // (1024 * 1024)} MB.")
        if upload is None:
            raise InvalidInput(fields={"file": ["Send the file as the multipart field 'file'."]})
        attachment = services.store_upload(uploader=user, file=upload)
        return Response(_described(attachment, request), status=status.HTTP_201_CREATED)


class DirectUploadSerializer(serializers.Serializer[None]):
    filename = serializers.CharField(max_length=255)
    size = serializers.IntegerField(min_value=1)


class DirectUploadView(APIView):
    @extend_schema(
        request=DirectUploadSerializer,
        responses={
            201: inline_serializer(
                "DirectUpload",
                {
                    "attachment": AttachmentSchema(),
                    "upload": inline_serializer(
                        "PresignedPost",
                        {
                            "method": serializers.CharField(),
                            "url": serializers.URLField(),
                            "fields": serializers.DictField(),
                        },
                    ),
                },
            )
        },
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        """Start a direct upload to the store: POST the file to ``upload.url`` as multipart
        with ``upload.fields`` (then the file as field "file"), then call ``complete``.

        409 "direct_upload_unavailable" when the server stores files locally.
        """
        data = validated(DirectUploadSerializer, request.data)
        attachment, upload = services.start_direct_upload(
            uploader=authenticated_user(request), filename=data["filename"], size=data["size"]
        )
        return Response(
            {"attachment": attachment_payload(attachment), "upload": upload}, status=status.HTTP_201_CREATED
        )


class CompleteUploadView(APIView):
    @extend_schema(request=None, responses={200: AttachmentSchema}, tags=TAGS)
    def post(self, request: Request, attachment_id: int) -> Response:
        """Confirm a direct upload: its real size and type are checked, then it is processed."""
        attachment = services.complete_direct_upload(uploader=authenticated_user(request), attachment_id=attachment_id)
        return Response(_described(attachment, request))


class AttachmentView(APIView):
    @extend_schema(responses={200: AttachmentSchema}, tags=TAGS)
    def get(self, request: Request, attachment_id: int) -> Response:
        """An attachment's description and download URLs (its uploader and the members who can see it)."""
        attachment = selectors.access_attachment(user_id=authenticated_user(request).pk, attachment_id=attachment_id)
        return Response(_described(attachment, request))


class NotReady(ApplicationError):
    code = "processing"
    status_code = 409
    default_detail = "The file is still being processed."


class DownloadView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("variant", str, enum=["original", "thumbnail"])],
        responses={302: None, 200: bytes},
        tags=TAGS,
    )
    def get(self, request: Request, attachment_id: int) -> Any:
        """The file: a redirect to a short-lived URL of the store (or the bytes on a local store).

        Types a browser could execute are only ever served as a download.
        """
        user = authenticated_user(request)
        attachment = selectors.access_attachment(user_id=user.pk, attachment_id=attachment_id)
        variant = request.query_params.get("variant", "original")
        if variant not in ("original", "thumbnail") or (variant == "thumbnail" and not attachment.thumbnail_key):
            raise services.AttachmentNotFound()
        if attachment.status != Attachment.Status.READY and attachment.uploader_id != user.pk:
            raise NotReady()  # not yet checked nor stripped of metadata: only its uploader may see it
        if hasattr(default_storage, "bucket_name"):
            return HttpResponseRedirect(selectors.presigned_url(attachment, variant=variant))
        key = attachment.thumbnail_key if variant == "thumbnail" else attachment.key
        content_type, disposition = (
            ("image/jpeg", "inline") if variant == "thumbnail" else selectors.download_headers(attachment)
        )
        response = FileResponse(
            default_storage.open(key, "rb"),
            content_type=content_type,
            as_attachment=disposition == "attachment",
            filename=attachment.filename,
        )
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        response["Cache-Control"] = "private, max-age=300"
        return response
