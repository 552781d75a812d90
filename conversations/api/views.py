"""Conversations REST endpoints: thin, parse -> gate -> service -> payload (conversations.events)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.views import authenticated_user, validated
from conversations import events, selectors, services
from conversations.api.serializers import (
    AddMembersSerializer,
    ConversationDetailSchema,
    ConversationSchema,
    CreateConversationSerializer,
    CursorSerializer,
    CursorStateSchema,
    EditMessageSerializer,
    HistoryQuerySerializer,
    MemberSchema,
    MessageInfoSchema,
    MessagePageSchema,
    MessageSchema,
    ReactionSerializer,
    RoleSerializer,
    SendMessageSerializer,
)
from conversations.models import Conversation

TAGS = ["conversations"]


def _detail(user_id: int, conversation_id: int) -> dict[str, Any]:
    membership = selectors.access_membership(user_id=user_id, conversation_id=conversation_id)
    (summary,) = selectors.summarize([membership])
    members = selectors.members_of(membership=membership)
    return {**events.conversation_item(summary), "members": [events.member_payload(m) for m in members]}


class ConversationListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("limit", int, description="At most 100; default 100.")],
        responses={200: ConversationSchema(many=True)},
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        """My conversations, most recently active first, with last message and unread count."""
        user = authenticated_user(request)
        try:
            limit = max(1, min(int(request.query_params.get("limit", 100)), 100))
        except ValueError:
            limit = 100
        summaries = selectors.conversation_list(user_id=user.pk, limit=limit)
        return Response([events.conversation_item(s) for s in summaries])

    @extend_schema(
        request=CreateConversationSerializer,
        responses={
            201: ConversationDetailSchema,
            200: OpenApiResponse(ConversationDetailSchema, "Direct chat existed"),
        },
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        """Start a direct chat (get-or-create: one per pair of users) or create a group."""
        user = authenticated_user(request)
        data = validated(CreateConversationSerializer, request.data)
        created = True
        if data["kind"] == Conversation.Kind.DIRECT:
            conversation, created = services.get_or_create_direct(user=user, other_user_id=data["user_id"])
        else:
            conversation = services.create_group(creator=user, title=data["title"], member_ids=data["member_ids"])
        return Response(
            _detail(user.pk, conversation.pk), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ConversationDetailView(APIView):
    @extend_schema(responses={200: ConversationDetailSchema}, tags=TAGS)
    def get(self, request: Request, conversation_id: int) -> Response:
        """One conversation with its members and their cursors."""
        return Response(_detail(authenticated_user(request).pk, conversation_id))


class MembersView(APIView):
    @extend_schema(request=AddMembersSerializer, responses={201: MemberSchema(many=True)}, tags=TAGS)
    def post(self, request: Request, conversation_id: int) -> Response:
        """Add members to a group (admins). They see history from now on."""
        data = validated(AddMembersSerializer, request.data)
        services.add_members(
            actor=authenticated_user(request), conversation_id=conversation_id, user_ids=data["user_ids"]
        )
        detail = _detail(authenticated_user(request).pk, conversation_id)
        return Response(detail["members"], status=status.HTTP_201_CREATED)


class MemberView(APIView):
    @extend_schema(responses={204: None}, tags=TAGS)
    def delete(self, request: Request, conversation_id: int, user_id: int) -> Response:
        """Remove a member (admins), or leave the group (your own user id)."""
        services.remove_member(actor=authenticated_user(request), conversation_id=conversation_id, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RoleSerializer, responses={200: MemberSchema}, tags=TAGS)
    def patch(self, request: Request, conversation_id: int, user_id: int) -> Response:
        """Change a member's role (owners make owners and admins; admins make admins)."""
        data = validated(RoleSerializer, request.data)
        membership = services.set_member_role(
            actor=authenticated_user(request), conversation_id=conversation_id, user_id=user_id, role=data["role"]
        )
        return Response(events.member_payload(membership))


class MessagesView(APIView):
    @extend_schema(
        parameters=[HistoryQuerySerializer],
        responses={200: MessagePageSchema},
        tags=TAGS,
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """History by seq, oldest first: the latest page, or before/after a seq."""
        query = validated(HistoryQuerySerializer, request.query_params)
        membership = selectors.access_membership(
            user_id=authenticated_user(request).pk, conversation_id=conversation_id
        )
        page, has_more = selectors.message_page(
            membership=membership,
            before_seq=query.get("before_seq"),
            after_seq=query.get("after_seq"),
            limit=query["limit"],
        )
        return Response({"messages": [events.message_payload(m) for m in page], "has_more": has_more})

    @extend_schema(
        request=SendMessageSerializer,
        responses={201: MessageSchema, 200: OpenApiResponse(MessageSchema, "A retry: the original message")},
        tags=TAGS,
    )
    def post(self, request: Request, conversation_id: int) -> Response:
        """Send a message; a retry with the same client_msg_id returns the original (200)."""
        data = validated(SendMessageSerializer, request.data)
        message, created = services.send_message(
            sender=authenticated_user(request),
            conversation_id=conversation_id,
            client_msg_id=data["client_msg_id"],
            body=data["body"],
            reply_to=data.get("reply_to"),
            attachment_ids=data.get("attachment_ids") or [],
        )
        return Response(
            events.message_payload(message),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class MessageView(APIView):
    @extend_schema(request=EditMessageSerializer, responses={200: MessageSchema}, tags=TAGS)
    def patch(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Edit your message's text (within the edit window)."""
        data = validated(EditMessageSerializer, request.data)
        message = services.edit_message(
            user=authenticated_user(request), conversation_id=conversation_id, message_id=message_id, body=data["body"]
        )
        return Response(events.message_payload(message))

    @extend_schema(responses={200: MessageSchema}, tags=TAGS)
    def delete(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Delete your message for everyone; its tombstone stays in the order."""
        message = services.delete_message(
            user=authenticated_user(request), conversation_id=conversation_id, message_id=message_id
        )
        return Response(events.message_payload(message))


class ReactionView(APIView):
    @extend_schema(request=ReactionSerializer, responses={200: MessageSchema}, tags=TAGS)
    def put(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Set your reaction (one emoji per user per message)."""
        data = validated(ReactionSerializer, request.data)
        message = services.set_reaction(
            user=authenticated_user(request),
            conversation_id=conversation_id,
            message_id=message_id,
            emoji=data["emoji"],
        )
        return Response(events.message_payload(message))

    @extend_schema(responses={200: MessageSchema}, tags=TAGS)
    def delete(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """Remove your reaction."""
        message = services.set_reaction(
            user=authenticated_user(request), conversation_id=conversation_id, message_id=message_id, emoji=""
        )
        return Response(events.message_payload(message))


class MessageInfoView(APIView):
    @extend_schema(responses={200: MessageInfoSchema}, tags=TAGS)
    def get(self, request: Request, conversation_id: int, message_id: int) -> Response:
        """For the sender: which members have the message delivered and read."""
        user = authenticated_user(request)
        membership = selectors.access_membership(user_id=user.pk, conversation_id=conversation_id)
        message = selectors.access_message(membership=membership, message_id=message_id)
        if message.sender_id != user.pk:
            raise services.NotYourMessage()
        return Response(
            {"message_id": message.pk, "members": selectors.message_info(membership=membership, message=message)}
        )


class CursorView(APIView):
    status_name = services.ReceiptStatus.READ

    @extend_schema(request=CursorSerializer, responses={200: CursorStateSchema}, tags=TAGS)
    def post(self, request: Request, conversation_id: int) -> Response:
        """Move your cursor forward to a seq (never back); members hear it as receipt.update."""
        data = validated(CursorSerializer, request.data)
        membership = services.mark_cursor(
            user=authenticated_user(request), conversation_id=conversation_id, status=self.status_name, seq=data["seq"]
        )
        receipt = events.receipt_update(membership)
        del receipt["type"]
        return Response(receipt)


class DeliveredView(CursorView):
    status_name = services.ReceiptStatus.DELIVERED
