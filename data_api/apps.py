from django.apps import AppConfig


class DataApiConfig(AppConfig):
    name = "data_api"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
