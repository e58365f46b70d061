"""The job domain: a job's lifecycle, reading jobs, sending their tasks, and the models they run.

- ``service.py``: submit (uploaded images or the tenant's stored files), rerun, find, page, cancel and
  retry jobs, without HTTP (the API and the web pages call it); ``errors.py``: what it refuses;
- ``deletion.py``: deleting a job or a file for real, with a tombstone, freeing bytes nothing else uses;
- ``reuse.py``: the key under which a result may serve another job, and finding such results;
- ``lifecycle.py``: every state change (create, enqueue, withdraw, attempt, results, fail);
- ``idempotency.py``: idempotent submission;
- ``exports.py``: COCO, YOLO, CSV and Label Studio exports;
- ``retention.py``: what expires;
- ``queries.py``: reading one job or a page of them;
- ``dispatch.py``: send the task, then mark the job enqueued (API and beat alike);
- ``messages.py``: the names of the tasks sent to the workers;
- ``catalog.py``: the configured models and what the workers report they detect.

Both ``app/`` (HTTP) and ``tasks/`` (Celery) call this package; it imports neither,
and never torch or ultralytics.
"""
