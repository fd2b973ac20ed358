"""Which plugins exist, and their settings from SOURCE_<SLUG>_<KEY>."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from django.conf import settings

from . import providers
from .base import SourcePlugin


@cache
def plugin_classes() -> dict[str, type[SourcePlugin]]:
    found: dict[str, type[SourcePlugin]] = {}
    for module_info in pkgutil.iter_modules(providers.__path__):
        module = importlib.import_module(f"{providers.__name__}.{module_info.name}")
        for value in vars(module).values():
            is_plugin = isinstance(value, type) and issubclass(value, SourcePlugin) and value is not SourcePlugin
            if is_plugin and value.__module__ == module.__name__ and getattr(value, "slug", ""):
                found[value.slug] = value
    return dict(sorted(found.items()))


def source_settings(slug: str) -> dict[str, str]:
    prefix = f"SOURCE_{slug.upper()}_"
    return {name[len(prefix) :]: value for name, value in settings.SOURCE_SETTINGS.items() if name.startswith(prefix)}


def get_plugin(slug: str) -> SourcePlugin | None:
    cls = plugin_classes().get(slug)
    return cls(source_settings(slug)) if cls else None


def enabled_slugs() -> set[str]:
    """SOURCES_ENABLED, or every installed source; Demo (made-up data any user could feed to a
    tenant) only in demo mode or when named."""
    if settings.SOURCES_ENABLED:
        return set(settings.SOURCES_ENABLED)
    return {slug for slug in plugin_classes() if slug != "demo" or settings.DEMO_MODE}


def enabled_plugins() -> list[SourcePlugin]:
    """Sources Connect offers: every plugin the operator hasn't disabled and that is configured."""
    enabled = enabled_slugs()
    plugins = [cls(source_settings(slug)) for slug, cls in plugin_classes().items() if slug in enabled]
    return [plugin for plugin in plugins if plugin.is_available()]
