"""Shared storage and its metadata: the one face both the API and the workers use.

``app/`` (HTTP) and ``tasks/`` (Celery) both depend on this package; it depends
on neither, and never imports torch or ultralytics.
"""

from storage.settings import Settings
from storage.store import Storage

__all__ = ["Settings", "Storage"]
