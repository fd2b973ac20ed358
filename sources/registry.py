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


def enabled_plugins() -> list[SourcePlugin]:
    """Sources Connect offers: every plugin the operator hasn't disabled and that is configured."""
    enabled = set(settings.SOURCES_ENABLED) or set(plugin_classes())
    plugins = [cls(source_settings(slug)) for slug, cls in plugin_classes().items() if slug in enabled]
    return [plugin for plugin in plugins if plugin.is_available()]
