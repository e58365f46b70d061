"""YOLO inference on the runtime each model is fastest on, behind one interface (``inference.backends``).

Used by the worker (``tasks/``) and the benchmarks; imports no Celery, no
database and, unless a model needs it, no torch.
"""
