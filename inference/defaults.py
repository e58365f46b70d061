"""Ultralytics' prediction defaults, as inference owns them: what a prediction runs with when nothing else is asked.

A job's parameters (``jobs.lifecycle.JobParams``), the API's size arithmetic
(``jobs.catalog``), the detectors (``inference.backends``) and the model tools
(``training/``, ``evaluation/``) all take them from here. Importing this module loads
nothing: the API imports it and never torch.
"""

from __future__ import annotations

# Ultralytics' own defaults for ``YOLO.predict``.
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.7
# The longest side images are resized to when neither the job nor the weights name a size.
DEFAULT_INFERENCE_SIZE = 640
