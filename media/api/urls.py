from django.urls import path

from media.api import views

urlpatterns = [
    path("media/", views.UploadView.as_view(), name="api-media-upload"),
    path("media/uploads/", views.DirectUploadView.as_view(), name="api-media-direct"),
    path("media/<int:attachment_id>/", views.AttachmentView.as_view(), name="api-media"),
    path("media/<int:attachment_id>/complete/", views.CompleteUploadView.as_view(), name="api-media-complete"),
    path("media/<int:attachment_id>/download/", views.DownloadView.as_view(), name="api-media-download"),
]
