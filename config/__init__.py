"""Process configuration: the settings (read from the environment here alone), paths and logging set-up.

``app/``, ``tasks/``, ``jobs/`` and ``storage/`` all take a :class:`Settings`
built once per process; none of them reads the environment itself.
"""

from config.settings import Settings, SettingsError

__all__ = ["Settings", "SettingsError"]
