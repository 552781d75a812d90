"""Moderation REST endpoints for users: report abuse, block and unblock. Thin: parse ->
service -> payload. Moderators work in the Django admin (moderation/admin.py)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from accounts.api.serializers import PublicUserSerializer
from accounts.api.views import authenticated_user, validated
from moderation import selectors, services
from moderation.api.serializers import BlockSchema, ReportCreateSerializer, ReportSchema
from moderation.models import Block, Report


class ReportThrottle(UserRateThrottle):
    """Reports cost moderators' time: at most a few dozen an hour per user."""

    scope = "report"
    rate = "60/hour"


def report_payload(report: Report) -> dict[str, Any]:
    return {
        "id": report.pk,
        "status": report.status,
        "reason": report.reason,
        "conversation_id": report.conversation_id,
        "message_id": report.message_id,
        "user_id": report.reported_user_id,
        "created_at": report.created_at,
    }


def block_payload(block: Block) -> dict[str, Any]:
    return {"user": PublicUserSerializer(block.blocked).data, "created_at": block.created_at}


class ReportsView(APIView):
    throttle_classes = (ReportThrottle,)

    @extend_schema(
        request=ReportCreateSerializer,
        responses={201: ReportSchema, 200: OpenApiResponse(ReportSchema, "You reported this message before")},
        tags=["moderation"],
    )
    def post(self, request: Request) -> Response:
        """Report a message or a user to the moderators.

        A message: `{"reason": "harassment", "conversation_id": 3, "message_id": 501, "details": "..."}`.
        A user: `{"reason": "spam", "user_id": 8}` (add `conversation_id` to include that chat's
        latest messages). The report keeps a copy of the message and the few before it, as you
        see them now. `reason` is one of spam, harassment, hate, violence, sexual, illegal, other.
        """
        data = validated(ReportCreateSerializer, request.data)
        report, created = services.report_abuse(reporter=authenticated_user(request), **data)
        return Response(report_payload(report), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class BlocksView(APIView):
    @extend_schema(responses={200: BlockSchema(many=True)}, tags=["moderation"])
    def get(self, request: Request) -> Response:
        """The users you blocked, most recent first."""
        blocks = selectors.blocks_of(user_id=authenticated_user(request).pk)[:1000]
        return Response([block_payload(b) for b in blocks])


class BlockView(APIView):
    @extend_schema(
        request=None,
        responses={201: BlockSchema, 200: OpenApiResponse(BlockSchema, "Already blocked")},
        tags=["moderation"],
    )
    def post(self, request: Request, user_id: int) -> Response:
        """Block a user: neither of you can send the other direct messages (`blocked`), and
        neither sees the other's presence or last seen. Groups you share are not affected."""
        block, created = services.block_user(user=authenticated_user(request), blocked_id=user_id)
        return Response(block_payload(block), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(responses={204: None}, tags=["moderation"])
    def delete(self, request: Request, user_id: int) -> Response:
        """Unblock a user (also when there was no block)."""
        services.unblock_user(user=authenticated_user(request), blocked_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
