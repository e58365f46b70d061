"""A Python client of the yolo-jobs API and the ``yolo-jobs`` command.

Its own small package: it needs requests, requests-toolbelt (streamed multipart
uploads), tuspy (resumable uploads by tus) and tqdm (progress bars), never Flask,
torch or the server's packages.
"""

from yolo_jobs_client.client import FINISHED_STATUSES, Client, ExportedFile, SubmittedJob
from yolo_jobs_client.errors import (
    AuthError,
    ClientError,
    Conflict,
    NotFound,
    Unavailable,
    UsageError,
)
from yolo_jobs_client.uploads import UploadedFile

__all__ = [
    "FINISHED_STATUSES",
    "AuthError",
    "Client",
    "ClientError",
    "Conflict",
    "ExportedFile",
    "NotFound",
    "SubmittedJob",
    "Unavailable",
    "UploadedFile",
    "UsageError",
]
