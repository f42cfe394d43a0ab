"""The module ``celery -A`` loads: the app for the settings in force."""

from imgq.worker.app import get_app

app = get_app()
