"""Settings of the pytest process: ``streaming.settings`` with a key for tests only.

Production settings refuse to start without ``DJANGO_SECRET_KEY`` when DEBUG is off, and
redirect plain HTTP to HTTPS; the test client speaks plain HTTP. Child processes that
tests start inherit these variables (or set their own, see bench/stack.py).
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "streamer-tests-only-secret-key")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")

from streaming.settings import *  # noqa: F403
