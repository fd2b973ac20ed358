from django.urls import path

from .records import MEASUREMENTS, PERIODIC
from .views import RecordListView

urlpatterns = [
    *[path(f"{route}", RecordListView.as_view(record_type=kind)) for route, kind in PERIODIC.items()],
    *[path(f"{kind}/readings", RecordListView.as_view(record_type=kind)) for kind in MEASUREMENTS],
]
