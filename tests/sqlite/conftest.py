"""These tests run only on SQLite (the one-machine demo's database): `tests/test_sqlite_demo.py`
runs them in a process of their own with `DATABASE_URL=sqlite:///...`."""

from django.conf import settings


def pytest_ignore_collect(collection_path, config):  # type: ignore[no-untyped-def]
    return settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3"
