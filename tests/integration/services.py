"""Re-exported for the integration tests; the servers live in :mod:`tagger.devservers`."""

from tagger.devservers import CeleryWorker, MotoServer, RedisServer, free_port, settings_env

__all__ = ["CeleryWorker", "MotoServer", "RedisServer", "free_port", "settings_env"]
