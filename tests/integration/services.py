"""Re-exported for the integration tests; the servers live in :mod:`tagger.devservers`."""

from tagger.devservers import (
    ApiServer,
    CeleryWorker,
    MotoServer,
    RedisServer,
    free_port,
    settings_env,
)

__all__ = ["ApiServer", "CeleryWorker", "MotoServer", "RedisServer", "free_port", "settings_env"]
