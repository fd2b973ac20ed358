from django.urls import path

from . import views

urlpatterns = [
    path("", views.connect_page, name="connect-page"),
    path("client.js", views.client_js, name="connect-client-js"),
    path("assets/<str:name>", views.asset, name="connect-asset"),
    path("sources/<slug:slug>/connect", views.ConnectSourceView.as_view(), name="connect-source"),
    path("connections", views.ConnectionsView.as_view(), name="connect-connections"),
    path("connections/<str:connection_id>/disconnect", views.DisconnectView.as_view(), name="connect-disconnect"),
    path("oauth/callback", views.oauth_callback_view, name="connect-oauth-callback"),
    path("oauth/done.js", views.oauth_js, name="connect-oauth-js"),
    path("oauth/<slug:slug>/start", views.oauth_start_view, name="connect-oauth-start"),
]
