"""``python -m yolo_jobs_client``: the ``yolo-jobs`` command."""

import sys

from yolo_jobs_client.cli import main

sys.exit(main())
