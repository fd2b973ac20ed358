"""The Application API (CONTRACT §7): /v1/apps/{client_id}/...

`users/{type}` and `users/{humanId}` share a shape. The data types are a fixed set of words and
are listed first, so they win; anything else under `users/` is a user id (24 hex digits, which
no type name is)."""

from django.urls import URLPattern, path

from sources.types import BATCH_TYPES

from .app_selectors import SUMMARY_SUMS
from .app_views import (
    AuditView,
    BatchRecordsView,
    BatchSummariesView,
    UserSourcesView,
    UsersView,
    UserSyncView,
    UserView,
)

urlpatterns: list[URLPattern] = [
    path("users", UsersView.as_view(), name="app-users"),
    *[path(f"users/{kind}/summaries", BatchSummariesView.as_view(record_type=kind)) for kind in SUMMARY_SUMS],
    *[path(f"users/{route}", BatchRecordsView.as_view(record_type=kind)) for route, kind in BATCH_TYPES.items()],
    path("users/<str:human_id>", UserView.as_view(), name="app-user"),
    path("users/<str:human_id>/sources", UserSourcesView.as_view(), name="app-user-sources"),
    path("users/<str:human_id>/sync", UserSyncView.as_view(), name="app-user-sync"),
    path("audit", AuditView.as_view(), name="app-audit"),
]
