"""Video for the workers: which frames a job samples, how they fall into segments, and decoding them.

A video job is cut into segments that workers analyse independently, so the rule that decides
which frame is sampled and which segment owns it lives here once (:mod:`video.sampling`), next to
the one decoder that reads a segment's frames (:mod:`video.frames`). The package knows nothing of
the database or of HTTP: the API and the tasks hand it paths and numbers and store what it returns.
"""
