"""Every analyser tagger knows, by name, in the order they run.

Adding an analyser is one module that implements :class:`~tagger.analyzers.base.Analyzer` and
one line here; ``TAGGER_ANALYZERS`` then enables it. The order matters only where one analyser
reads another's findings (``colours`` reads the ``objects`` boxes), so readers come after what
they read, whatever order the setting lists them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from tagger.analyzers.base import Analyzer
from tagger.analyzers.classify import ClassifyAnalyzer
from tagger.analyzers.colours import ColoursAnalyzer
from tagger.analyzers.labels import LabelsAnalyzer
from tagger.analyzers.objects import ObjectsAnalyzer
from tagger.analyzers.safety import SafetyAnalyzer
from tagger.analyzers.text import TextAnalyzer
from tagger.config import Settings
from tagger.errors import ConfigError


@dataclass(frozen=True)
class AnalyzerEntry:
    """How to make an analyser for a process, and how to read the version it would have
    without loading it (the backfill compares stored versions on a host that runs no model)."""

    create: Callable[[Settings], Analyzer]
    installed_version: Callable[[Settings], str]
    build: Callable[[Settings], str] | None = None
    """Build (or rebuild) the analyser's model artifact from its registry package and return
    its version; ``None`` for an analyser without a model."""
    active: Callable[[Settings], bool] | None = None
    """Whether an enabled analyser has anything to do (``labels`` without an active label set
    has not); ``None`` for always."""


ANALYZERS: Mapping[str, AnalyzerEntry] = MappingProxyType(
    {
        "classify": AnalyzerEntry(
            ClassifyAnalyzer.create, ClassifyAnalyzer.installed_version, ClassifyAnalyzer.build
        ),
        "objects": AnalyzerEntry(
            ObjectsAnalyzer.create, ObjectsAnalyzer.installed_version, ObjectsAnalyzer.build
        ),
        "colours": AnalyzerEntry(ColoursAnalyzer.create, ColoursAnalyzer.installed_version),
        "safety": AnalyzerEntry(
            SafetyAnalyzer.create, SafetyAnalyzer.installed_version, SafetyAnalyzer.build
        ),
        "text": AnalyzerEntry(
            TextAnalyzer.create, TextAnalyzer.installed_version, TextAnalyzer.build
        ),
        "labels": AnalyzerEntry(
            LabelsAnalyzer.create, LabelsAnalyzer.installed_version, active=LabelsAnalyzer.is_active
        ),
    }
)


def enabled_names(settings: Settings) -> list[str]:
    """The configured analysers that have work, in run order; an unknown name is a
    configuration error, and so is an analyser without one it reads (a label set needs the
    classifier's embedding)."""
    unknown = [name for name in settings.analyzers if name not in ANALYZERS]
    if unknown:
        raise ConfigError(
            f"unknown analyser {', '.join(map(repr, unknown))} in TAGGER_ANALYZERS; "
            f"known: {', '.join(ANALYZERS)}"
        )
    names = [
        name
        for name, entry in ANALYZERS.items()
        if name in settings.analyzers and (entry.active is None or entry.active(settings))
    ]
    if "labels" in names and "classify" not in names:
        raise ConfigError("label sets read the classify analyser's embedding; enable classify")
    return names


def create_analyzers(settings: Settings) -> list[Analyzer]:
    """One instance of each enabled analyser (models loaded, built first when missing)."""
    return [ANALYZERS[name].create(settings) for name in enabled_names(settings)]


def installed_versions(settings: Settings) -> dict[str, str]:
    """Name -> version of each enabled analyser as installed (model manifests verified, no
    session made, nothing built): what a result must carry to be current."""
    return {name: ANALYZERS[name].installed_version(settings) for name in enabled_names(settings)}


def rerun_closure(analyzers: Sequence[Analyzer], outdated: Sequence[str]) -> set[str]:
    """``outdated`` plus every analyser that reads one of them, transitively: new boxes
    change the subject colours too."""
    rerun = set(outdated)
    for analyzer in analyzers:  # run order: a reader comes after what it reads
        if any(name in rerun for name in analyzer.reads):
            rerun.add(analyzer.name)
    return rerun


def build_models(settings: Settings) -> dict[str, str]:
    """Build every enabled analyser's model artifact (what a container image does once at
    build time); name -> version of what was built."""
    built: dict[str, str] = {}
    for name in enabled_names(settings):
        build = ANALYZERS[name].build
        if build is not None:
            built[name] = build(settings)
    return built
