"""Notifications and their delivery attempts, visible to operators and never edited: they are
the record of what was sent, when, and how the receiver answered."""

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest

from .models import DeliveryAttempt, Notification

if TYPE_CHECKING:
    AttemptInlineBase = admin.TabularInline[DeliveryAttempt, Notification]
    NotificationAdminBase = admin.ModelAdmin[Notification]
else:  # the admin classes are not subscriptable at run time
    AttemptInlineBase = admin.TabularInline
    NotificationAdminBase = admin.ModelAdmin


class ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryAttemptInline(ReadOnly, AttemptInlineBase):
    model = DeliveryAttempt
    fields = ("number", "at", "outcome", "status_code", "error", "duration_ms")
    readonly_fields = fields
    extra = 0
    ordering = ("at",)


@admin.register(Notification)
class NotificationAdmin(ReadOnly, NotificationAdminBase):
    list_display = ("event_id", "event_type", "application", "created_at", "attempts", "delivered_at", "gave_up_at")
    list_filter = (
        "event_type",
        ("delivered_at", admin.EmptyFieldListFilter),
        ("gave_up_at", admin.EmptyFieldListFilter),
    )
    search_fields = ("event_id",)
    list_select_related = ("application",)
    readonly_fields = (
        "event_id",
        "application",
        "human_id",
        "sequence",
        "event_type",
        "payload",
        "created_at",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "gave_up_at",
    )
    fields = readonly_fields
    inlines = [DeliveryAttemptInline]
    date_hierarchy = "created_at"
