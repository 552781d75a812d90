from django.urls import path

from conversations.api import views

urlpatterns = [
    path("conversations/", views.ConversationListView.as_view(), name="api-conversations"),
    path("conversations/<int:conversation_id>/", views.ConversationDetailView.as_view(), name="api-conversation"),
    path("conversations/<int:conversation_id>/members/", views.MembersView.as_view(), name="api-members"),
    path("conversations/<int:conversation_id>/members/<int:user_id>/", views.MemberView.as_view(), name="api-member"),
    path("conversations/<int:conversation_id>/messages/", views.MessagesView.as_view(), name="api-messages"),
    path(
        "conversations/<int:conversation_id>/messages/<int:message_id>/",
        views.MessageView.as_view(),
        name="api-message",
    ),
    path(
        "conversations/<int:conversation_id>/messages/<int:message_id>/reaction/",
        views.ReactionView.as_view(),
        name="api-reaction",
    ),
    path(
        "conversations/<int:conversation_id>/messages/<int:message_id>/info/",
        views.MessageInfoView.as_view(),
        name="api-message-info",
    ),
    path("conversations/<int:conversation_id>/read/", views.CursorView.as_view(), name="api-read"),
    path("conversations/<int:conversation_id>/delivered/", views.DeliveredView.as_view(), name="api-delivered"),
]
