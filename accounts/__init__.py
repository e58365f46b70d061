"""Owners and their keys: tenants, API keys, and who is asking (the principal).

Every job, upload and idempotency key belongs to the tenant of the key that made
it. Keys are random (256 bits), shown once, stored only as a SHA-256 hash and
compared in constant time. An admin key sees every tenant's jobs (operators).
Both ``app/`` (authentication, the ``keys`` commands) and ``jobs/`` (scoping)
use this package; it knows nothing of HTTP.
"""
