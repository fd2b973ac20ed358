from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from connect.views import LegacyPublicTokensView, LegacyTokensView, TokenView
from data_api.views import docs_view, schema_view
from sources.hooks import hook

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/connect/token", TokenView.as_view(), name="token"),
    path("v1/connect/tokens", LegacyTokensView.as_view(), name="legacy-tokens"),
    path("v1/connect/publictokens", LegacyPublicTokensView.as_view(), name="legacy-public-tokens"),
    path("connect/", include("connect.urls")),
    path("v1/human/", include("data_api.urls")),
    path("v1/schema", schema_view, name="schema"),
    path("docs", docs_view, name="docs"),
    path("v1/apps/<str:client_id>/", include("data_api.app_urls")),
    path("hooks/<slug:slug>", hook, name="push-hook"),
]

if settings.DEMO_MODE:
    urlpatterns.append(path("demo/", include("humanapi_project.demo")))

handler400 = "humanapi_project.errors.handler400"
handler403 = "humanapi_project.errors.handler403"
handler404 = "humanapi_project.errors.handler404"
handler500 = "humanapi_project.errors.handler500"
