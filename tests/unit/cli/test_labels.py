"""`tagger train` and `tagger labels …` as a user runs them on the embedded default: train on
Fashion-MNIST folders, inspect, evaluate, activate, tag; and every mistake a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tagger.cli import app
from tagger.config import Settings

pytest.importorskip("tensorflow")

FASHION = Path("/usr/share/datasets/fashion-mnist")
SCRIPT = Path(__file__).parents[3] / "scripts" / "fashion_mnist.py"


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TAGGER_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TAGGER_MODEL_DIR", str(settings.model_dir))
    monkeypatch.setenv("TAGGER_LABELSETS_DIR", str(settings.labelsets_root))
    monkeypatch.setenv("TAGGER_FEATURE_CACHE_DIR", str(settings.feature_cache_dir))
    monkeypatch.setenv("TAGGER_ANALYZERS", "classify,labels")
    monkeypatch.delenv("TAGGER_LABELSETS", raising=False)
    return settings


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (scripts/test.sh installs it)")
    dest = tmp_path_factory.mktemp("fashion")
    subprocess.run(
        [sys.executable, str(SCRIPT), "export", str(dest), "--per-class", "20",
         "--test-per-class", "10"],
        check=True,
    )  # fmt: skip
    return dest


def test_train_inspect_evaluate_activate_and_tag(env: Settings, fashion: Path) -> None:
    runner = CliRunner()
    trained = runner.invoke(app, ["train", str(fashion / "train"), "--name", "fashion"])
    assert trained.exit_code == 0, trained.output
    assert "trained fashion@" in trained.stdout and "200 photos" in trained.stdout
    spec = trained.stdout.split("trained ")[1].split()[0]

    listed = json.loads(runner.invoke(app, ["labels", "list", "--json"]).stdout)
    assert [(row["labelset"], row["active"]) for row in listed] == [(spec, False)]
    shown = json.loads(runner.invoke(app, ["labels", "show", "fashion"]).stdout)
    assert shown["labels"][:3] == ["ankle-boot", "bag", "coat"] and len(shown["labels"]) == 10
    assert shown["backbone"]["licence"] == "Apache-2.0"
    assert shown["data"]["per_label"]["bag"] == 20

    evaluated = runner.invoke(app, ["labels", "eval", "fashion", str(fashion / "test"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["photos"] == 100
    assert report["accuracy"] >= 0.5  # 20 photos per class; 200 per class reach 0.86
    assert sum(map(sum, report["confusion"])) == 100
    assert Path(report["confusion_png"]).is_file()

    photos = sorted((fashion / "test" / "trouser").iterdir())[:3]
    before = runner.invoke(app, ["tag", *map(str, photos), "--json"])
    assert before.exit_code == 0, before.output
    untouched = [json.loads(line) for line in before.stdout.splitlines()]
    assert all(t["parents"] != ["fashion"] for r in untouched for t in r["tags"])

    activated = runner.invoke(app, ["labels", "activate", "fashion"])
    assert activated.exit_code == 0 and spec in activated.stdout
    after = runner.invoke(app, ["tag", *map(str, photos), "--json"])
    results = [json.loads(line) for line in after.stdout.splitlines()]
    assert all(r["analyzers"]["labels"]["version"] == spec for r in results)
    custom = [t for r in results for t in r["tags"] if t["parents"] == ["fashion"]]
    assert custom and {t["name"] for t in custom} <= set(shown["labels"])

    deactivated = runner.invoke(app, ["labels", "deactivate", "fashion"])
    assert deactivated.exit_code == 0
    listed = json.loads(runner.invoke(app, ["labels", "list", "--json"]).stdout)
    assert listed[0]["active"] is False


def test_mistakes_are_messages_not_tracebacks(env: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    one = tmp_path / "one" / "sedan"
    one.mkdir(parents=True)
    (one / "a.jpg").write_bytes(b"x")
    cases = {
        "only one label (sedan)": ["train", str(one.parent), "--name", "cars"],
        "no such folder or file": ["train", str(tmp_path / "nowhere"), "--name", "cars"],
        "label set name 'Cars!'": ["train", str(one.parent), "--name", "Cars!"],
        "no label set cars": ["labels", "show", "cars"],
        "cars is not active": ["labels", "deactivate", "cars"],
        "TAGGER_LABELSETS_URI": ["labels", "pull", "cars@abcd1234"],
    }
    for message, args in cases.items():
        done = runner.invoke(app, args)
        assert done.exit_code != 0, (args, done.output)
        assert message in " ".join(done.output.split()), (args, done.output)
        assert "Traceback" not in done.output
