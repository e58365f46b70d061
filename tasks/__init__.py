"""The Celery side of yolo-jobs: the worker's tasks, its pipeline, beat's maintenance.

Importing a module of this package has no effect on the process: the app is built by
:func:`tasks.application.create_celery_app` from a settings object, and ``celery -A tasks``
gets it from :mod:`tasks.celery`. Task modules import torch and ultralytics only in a worker child, and only
where they are installed: a model that needs them loads through :mod:`inference.backends`, and the pool asks
torch for GPUs (:mod:`tasks.model_pool`). A CPU worker installed without them (the ``worker-cpu`` extra) runs
exported models only.
"""
