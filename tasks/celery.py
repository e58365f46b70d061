"""The process entry of ``celery -A tasks worker|beat|inspect|flower``: the app built from the environment.

Celery's ``-A tasks`` looks for ``tasks.celery`` (its documented ``proj/celery.py`` layout) and
finds :data:`celery_app` there. This is the one module of ``tasks`` with an effect on import: it
reads the settings once (``Settings.from_env``) and builds the app (:mod:`tasks.application`).
"""

from config import Settings
from tasks.application import create_celery_app

celery_app = create_celery_app(Settings.from_env())
