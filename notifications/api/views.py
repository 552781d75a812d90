"""Push REST endpoints: thin, parse -> gate -> service -> payload."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api.views import authenticated_user, validated
from accounts.models import Device
from accounts.selectors import DEVICE_SESSION_KEY, active_device
from notifications import selectors, services, vapid
from notifications.api.serializers import (
    DeliveryQuerySerializer,
    DeliverySchema,
    MuteSerializer,
    MuteStateSchema,
    PreferencesSerializer,
    PushConfigSchema,
    SubscribeSerializer,
    SubscriptionSchema,
)
from notifications.backends import backend_for
from notifications.models import PushDelivery, PushPreference, PushSubscription

TAGS = ["push"]


def caller_device(request: Request) -> Device:
    """The device making the request: the JWT's, or the one the browser session logged in as."""
    device: Device | None = getattr(request, "auth_device", None)
    if device is None:
        session = getattr(request, "session", None)
        device_id = session.get(DEVICE_SESSION_KEY) if session is not None else None
        device = active_device(user_id=authenticated_user(request).pk, device_id=device_id)
    if device is None:
        raise services.NoDevice()
    return device


def subscription_payload(subscription: PushSubscription) -> dict[str, Any]:
    return {
        "id": subscription.pk,
        "kind": subscription.kind,
        "device_id": subscription.device_id,
        "endpoint": subscription.endpoint,
        "token": subscription.token,
        "created_at": subscription.created_at,
        "last_success_at": subscription.last_success_at,
    }


def delivery_payload(delivery: PushDelivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "kind": delivery.kind,
        "message_id": delivery.message_id,
        "conversation_id": delivery.conversation_id,
        "device_id": delivery.device_id,
        "seq": delivery.seq,
        "status": delivery.status,
        "reason": delivery.reason,
        "coalesced_into": delivery.coalesced_into_id,
        "preview": delivery.preview,
        "attempts": delivery.attempts,
        "response_status": delivery.response_status,
        "created_at": delivery.created_at,
        "sent_at": delivery.sent_at,
        "accepted_at": delivery.accepted_at,
    }


def preferences_payload(preference: PushPreference) -> dict[str, Any]:
    return {"enabled": preference.enabled, "previews": preference.previews}


class PushConfigView(APIView):
    @extend_schema(responses={200: PushConfigSchema}, tags=TAGS)
    def get(self, request: Request) -> Response:
        """What a client needs to subscribe: the VAPID public key and the kinds offered."""
        kinds = [
            kind
            for kind in PushSubscription.Kind.values
            if (backend := backend_for(kind)) is not None and backend.configured()
        ]
        return Response({"vapid_public_key": vapid.public_key(), "kinds": kinds})


class SubscriptionsView(APIView):
    @extend_schema(responses={200: SubscriptionSchema(many=True)}, tags=TAGS)
    def get(self, request: Request) -> Response:
        """Your push subscriptions, one per device at most."""
        rows = selectors.subscriptions_of(authenticated_user(request).pk)
        return Response([subscription_payload(s) for s in rows])

    @extend_schema(
        request=SubscribeSerializer,
        responses={
            201: SubscriptionSchema,
            200: OpenApiResponse(SubscriptionSchema, "This device's subscription, updated"),
        },
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        """Register this device for push: a Web Push subscription, or an FCM/APNs token.

        Replaces the device's previous subscription. 409 ``no_device`` when the session has
        no device, 409 ``push_unavailable`` when the server is not set up for the kind.
        """
        data = validated(SubscribeSerializer, request.data)
        subscription, created = services.register_subscription(
            device=caller_device(request),
            kind=data["kind"],
            endpoint=data.get("endpoint"),
            keys=data.get("keys"),
            token=data.get("token"),
        )
        return Response(
            subscription_payload(subscription), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class SubscriptionView(APIView):
    @extend_schema(responses={204: None}, tags=TAGS)
    def delete(self, request: Request, subscription_id: int) -> Response:
        """Stop pushing to a device of yours."""
        services.delete_subscription(user=authenticated_user(request), subscription_id=subscription_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeliveriesView(APIView):
    @extend_schema(parameters=[DeliveryQuerySerializer], responses={200: DeliverySchema(many=True)}, tags=TAGS)
    def get(self, request: Request) -> Response:
        """Push decisions for your devices, newest first: whether each got a push, or why not."""
        query = validated(DeliveryQuerySerializer, request.query_params)
        rows = selectors.deliveries_of(
            user_id=authenticated_user(request).pk,
            message_id=query.get("message_id"),
            device_id=query.get("device_id"),
            limit=query["limit"],
        )
        return Response([delivery_payload(d) for d in rows])


class PreferencesView(APIView):
    @extend_schema(responses={200: PreferencesSerializer}, tags=TAGS)
    def get(self, request: Request) -> Response:
        """Your push preferences."""
        return Response(preferences_payload(selectors.preferences_of(authenticated_user(request).pk)))

    @extend_schema(request=PreferencesSerializer, responses={200: PreferencesSerializer}, tags=TAGS)
    def patch(self, request: Request) -> Response:
        """Turn pushes on or off, or choose between message previews and only "New message"."""
        data = validated(PreferencesSerializer, request.data)
        preference = services.update_preferences(
            user=authenticated_user(request), enabled=data.get("enabled"), previews=data.get("previews")
        )
        return Response(preferences_payload(preference))


class MuteView(APIView):
    @extend_schema(request=MuteSerializer, responses={200: MuteStateSchema}, tags=["conversations"])
    def post(self, request: Request, conversation_id: int) -> Response:
        """Mute a conversation's push notifications until a time or forever; unmute with neither."""
        data = validated(MuteSerializer, request.data)
        membership = services.mute_conversation(
            user=authenticated_user(request),
            conversation_id=conversation_id,
            until=data["until"],
            forever=data["forever"],
        )
        return Response({"conversation_id": membership.conversation_id, "muted_until": membership.muted_until})
