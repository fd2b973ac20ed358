from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from connect.views import TokenView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/connect/token", TokenView.as_view(), name="token"),
    path("connect/", include("connect.urls")),
    path("v1/human/", include("data_api.urls")),
    path("v1/apps/<str:client_id>/", include("data_api.app_urls")),
]

if settings.DEMO_MODE:
    urlpatterns.append(path("demo/", include("humanapi_project.demo")))

handler400 = "humanapi_project.errors.handler400"
handler403 = "humanapi_project.errors.handler403"
handler404 = "humanapi_project.errors.handler404"
handler500 = "humanapi_project.errors.handler500"
