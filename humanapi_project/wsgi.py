import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "humanapi_project.settings")

application = get_wsgi_application()

# gunicorn runs no system checks of its own: a misconfigured source stops the server here.
from sources.checks import refuse_to_start_on_errors  # noqa: E402

refuse_to_start_on_errors()
