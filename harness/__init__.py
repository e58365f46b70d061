"""Real parts for the tests and the benchmarks: a run's own services, real subprocesses, generated images.

- ``services.py``: a PostgreSQL database, RabbitMQ vhost, Redis db and storage root
  made for one run and removed afterwards;
- ``processes.py``: real ``gunicorn`` and ``celery worker`` subprocesses in their own
  process groups (so a test can SIGKILL a whole worker), and polling;
- ``images.py``: small generated images in every accepted format.

Nothing here is imported by the API or the workers.
"""
