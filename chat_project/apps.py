from django.apps import AppConfig


class ChatProjectConfig(AppConfig):
    name = "chat_project"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat_project import checks  # noqa: F401  (registers the deploy checks)
