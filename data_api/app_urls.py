"""The Application API (CONTRACT §7): /v1/apps/{client_id}/..."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
