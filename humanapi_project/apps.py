from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project's own operational pieces: health and readiness probes, metrics, request logs."""

    name = "humanapi_project"
    label = "humanapi_project"
    verbose_name = "Operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import observability  # noqa: F401 - registers the check of LOG_FORMAT and METRICS_TOKEN
