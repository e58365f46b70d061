"""Storage maintenance under one roof: the schema, the retention cleanup, reclaiming bytes, and fsck.

One command line for operators, ``python -m storage.maintenance schema|cleanup|fsck``
(see ``cli.py``); beat runs the cleanup through ``tasks.maintenance``.
"""
