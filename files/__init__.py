"""A tenant's files: which stored files are its own, what they take of its quota, and what it may refer to.

Storage is shared and deduplicated across tenants (``storage``); this package says what
one tenant holds of it: the files of its jobs' uploads and its finished resumable
uploads (``tenant_files``). Nothing here knows HTTP; callers translate ``files.errors``.
"""
