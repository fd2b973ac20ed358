"""gunicorn's settings, read from the directory it starts in (`gunicorn humanapi_project.wsgi` from
the project root, or `-c /path/to/gunicorn.conf.py`). Options on the command line override them.

Connect URLs carry session tokens, and OAuth callbacks codes, in their query string, so:
- the access log (on with `--access-logfile -`) writes the path without the query string;
- gunicorn's own log lines (a request line it could not parse, "Error handling request <uri>")
  and its access lines go through the redaction filter of every other log of this server.
"""

import logging

from humanapi_project.log_redaction import RedactSecrets

# Address, time, method and path (never %(r)s, %(q)s or the Referer, which carry query strings),
# status, bytes, seconds.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)s'

# On the loggers, not their handlers: gunicorn replaces its handlers at start and on reload.
for _name in ("gunicorn.error", "gunicorn.access"):
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, RedactSecrets) for f in _logger.filters):
        _logger.addFilter(RedactSecrets())
