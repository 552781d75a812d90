from django.urls import path

from conversations.consumers import GatewayConsumer

websocket_urlpatterns = [
    path("ws/", GatewayConsumer.as_asgi()),
]
