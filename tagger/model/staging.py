"""Writing an artifact folder so that no reader ever sees half of one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(destination: Path) -> Iterator[Path]:
    """A staging folder beside ``destination`` to build into; renamed into place (replacing
    an older artifact) when the block succeeds, removed when it fails. Beside, so the rename
    stays on one file system and is atomic: a worker starting meanwhile loads the old artifact
    or the new one, never a mix."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}-", dir=destination.parent))
    staging.chmod(0o755)
    try:
        yield staging
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
