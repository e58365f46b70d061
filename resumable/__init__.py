"""Resumable uploads (tus 1.0 under ``/api/v1/uploads``): files of any size, sent in pieces that survive a
dropped connection, and kept as the tenant's stored files once whole.

The service knows nothing of HTTP: ``app/api/tus.py`` translates the protocol's
headers into its calls and its refusals (``resumable.errors``) into answers.
"""
