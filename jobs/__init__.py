"""The job domain: a job's lifecycle, reading jobs, sending their tasks, and the models they run.

- ``lifecycle.py``: every state change (create, enqueue, withdraw, attempt, results, fail);
- ``queries.py``: reading one job or a page of them;
- ``dispatch.py``: send the task, then mark the job enqueued (API and beat alike);
- ``messages.py``: the names of the tasks sent to the workers;
- ``catalog.py``: the configured models and what the workers report they detect.

Both ``app/`` (HTTP) and ``tasks/`` (Celery) call this package; it imports neither,
and never torch or ultralytics.
"""
