"""Re-exported for the integration tests; the servers live in :mod:`tagger_dev.devservers`."""

from tagger_dev.devservers import (
    ApiServer,
    CeleryWorker,
    MotoServer,
    RedisServer,
    free_port,
    settings_env,
)

__all__ = ["ApiServer", "CeleryWorker", "MotoServer", "RedisServer", "free_port", "settings_env"]
