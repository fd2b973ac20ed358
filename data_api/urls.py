"""The Data API (CONTRACT §6), mounted at /v1/human/.

Order matters: fixed segments (`summaries`, `daily`, `readings`) come before `{id}`.
"""

from django.urls import URLPattern, path, re_path

from sources.types import MEASUREMENTS, PERIODIC, SUMMARIZED_ROUTES

from . import views


def _summary_routes(route: str, kind: str) -> list[URLPattern]:
    return [
        path(f"{route}/summaries", views.SummaryListView.as_view(record_type=kind)),
        path(f"{route}/summaries/<str:ref>", views.SummaryDetailView.as_view(record_type=kind)),
        path(f"{route}/summary/<str:ref>", views.SummaryDetailView.as_view(record_type=kind)),
    ]


def _periodic_routes(route: str, kind: str) -> list[URLPattern]:
    return [
        path(route, views.RecordListView.as_view(record_type=kind)),
        path(f"{route}/daily/<str:day>", views.RecordListView.as_view(record_type=kind)),
        path(f"{route}/<str:record_id>", views.RecordDetailView.as_view(record_type=kind)),
    ]


def _measurement_routes(kind: str) -> list[URLPattern]:
    return [
        path(kind, views.LatestReadingView.as_view(record_type=kind)),
        path(f"{kind}/readings", views.RecordListView.as_view(record_type=kind)),
        path(f"{kind}/readings/daily/<str:day>", views.RecordListView.as_view(record_type=kind)),
        path(f"{kind}/readings/<str:record_id>", views.RecordDetailView.as_view(record_type=kind)),
    ]


urlpatterns = [
    path("", views.HumanSummaryView.as_view()),
    path("profile", views.ProfileView.as_view()),
    path("sources", views.SourcesView.as_view()),
    *[p for route, kind in SUMMARIZED_ROUTES.items() for p in _summary_routes(route, kind)],
    *[p for route, kind in PERIODIC.items() for p in _periodic_routes(route, kind)],
    *[p for kind in MEASUREMENTS for p in _measurement_routes(kind)],
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
