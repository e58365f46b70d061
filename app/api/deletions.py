"""DELETE /api/v1/jobs/<id> and /api/v1/files/<id>: deletion that frees the bytes, with a tombstone for audit.

The owner's key, or an admin's (any tenant's job or file; for a file, every tenant's hold
of it: privacy requests), deletes; anyone else gets 404, as for a job or file that never
was. The work is :mod:`jobs.deletion`'s (through :mod:`app.job_actions`, as the web page's
Delete); afterwards a GET of the job or the file answers 404, since the record itself is
gone (retention's 410 is for a record that stays while its bytes expired).
"""

from __future__ import annotations

from flask import Response

from app import job_actions
from app.api import bp
from app.api.schemas import ErrorBody, FilePath, JobPath


@bp.delete("/jobs/<uuid:job_id>", responses={204: None, 404: ErrorBody})
def delete_job(path: JobPath) -> Response:
    """Delete a job, its results and its references to files.

    A queued or running job is cancelled first. The bytes of its files that no other job or
    tenant refers to go too. A tombstone row keeps who deleted it, when, and the SHA-256 and
    size of each file. A GET of the job answers 404 afterwards.
    """
    job_actions.delete_job(path.job_id)
    return Response(status=204)


@bp.delete("/files/<uuid:file_id>", responses={204: None, 404: ErrorBody})
def delete_file(path: FilePath) -> Response:
    """Delete a file this tenant holds, and every reference to it.

    Its jobs keep the file's place, marked deleted, without a result (unfinished ones are
    cancelled first). Its bytes go once no tenant refers to them. A tombstone row keeps who
    deleted it and when. A GET of the file answers 404 afterwards.
    """
    job_actions.delete_file(path.file_id)
    return Response(status=204)
