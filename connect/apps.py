from django.apps import AppConfig


class ConnectConfig(AppConfig):
    name = "connect"
    default_auto_field = "django.db.models.BigAutoField"
