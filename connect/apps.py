from django.apps import AppConfig


class ConnectConfig(AppConfig):
    name = "connect"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from humanapi_project import checks  # noqa: F401 - registers the HTTPS and key checks

        from . import ratelimit  # noqa: F401 - registers the check of the RATE_LIMIT_* settings
