"""The analyser registry and the setting that enables analysers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tagger.analyzers.base import Analyzer
from tagger.analyzers.colours import VERSION as COLOURS_VERSION
from tagger.analyzers.registry import (
    ANALYZERS,
    enabled_names,
    installed_versions,
    rerun_closure,
)
from tagger.config import DEFAULT_ANALYZERS, Settings
from tagger.errors import ConfigError, ModelError


def test_the_default_set_is_classify_objects_colours_safety(tmp_path: Path) -> None:
    settings = Settings(labelsets_dir=tmp_path)
    assert settings.analyzers == ["classify", "objects", "colours", "safety", "labels"]
    # labels runs only while a label set is active
    assert enabled_names(settings) == ["classify", "objects", "colours", "safety"]
    assert set(DEFAULT_ANALYZERS) <= set(ANALYZERS)


def test_the_env_lists_analysers_by_comma(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGGER_ANALYZERS", " Safety, classify ")
    settings = Settings()
    assert settings.analyzers == ["safety", "classify"]
    # readers after what they read, whatever the order given
    assert enabled_names(settings) == ["classify", "safety"]


def test_an_unknown_or_repeated_analyser_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match=r"unknown analyser 'faces'.*known: classify"):
        enabled_names(Settings(analyzers=["classify", "faces"]))
    with pytest.raises(ValidationError, match="named twice: colours"):
        Settings(analyzers=["colours", "colours"])
    monkeypatch.setenv("TAGGER_ANALYZERS", "")
    with pytest.raises(ValidationError):
        Settings()


def test_colours_come_after_the_boxes_they_read() -> None:
    names = list(ANALYZERS)
    assert names.index("objects") < names.index("colours")


class Stub:
    def __init__(self, name: str, reads: tuple[str, ...] = ()) -> None:
        self.name, self.reads = name, reads


def test_re_running_the_detector_re_runs_its_readers() -> None:
    analyzers: list[Analyzer] = [
        Stub("classify"),  # type: ignore[list-item]
        Stub("objects"),  # type: ignore[list-item]
        Stub("colours", ("objects",)),  # type: ignore[list-item]
        Stub("safety"),  # type: ignore[list-item]
    ]
    assert rerun_closure(analyzers, ["objects"]) == {"objects", "colours"}
    assert rerun_closure(analyzers, ["safety"]) == {"safety"}
    assert rerun_closure(analyzers, []) == set()


def test_installed_versions_read_manifests_and_need_no_session(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "none", analyzers=["colours"])
    assert installed_versions(settings) == {"colours": COLOURS_VERSION}
    with pytest.raises(ModelError, match=r"no model artifact|no objects artifact"):
        installed_versions(Settings(model_dir=tmp_path / "none", analyzers=["objects"]))
