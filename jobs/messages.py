"""The tasks the API and beat send to the workers, by name: the one place those names are written.

The API imports this module, never the worker code behind the names; the workers
register their tasks under the same constants. Which queue each goes to is declared
once, in ``celery_config.py``.
"""

DETECT_TASK = "tasks.detection.detect"
# One part of a large upload (a video's segment, an image's tiles, an upload's last step): args job id, part id.
PART_TASK = "tasks.parts.run_part"
CLEANUP_TASK = "tasks.maintenance.cleanup_expired_files"
REAP_TASK = "tasks.maintenance.reap_jobs"
DELIVER_WEBHOOK_TASK = "tasks.webhooks.deliver"
SWEEP_WEBHOOKS_TASK = "tasks.webhooks.sweep"
SWEEP_UPLOADS_TASK = "tasks.maintenance.sweep_uploads"

# Tasks whose first argument is a job's id (their log lines carry it as job_id).
JOB_TASKS = (DETECT_TASK, PART_TASK)
