"""deploy/compose.yaml and deploy/kubernetes stay valid and in step with the code, offline: compose against the
vendored compose-spec schema, every manifest against kubernetes-validate's schemas (strict), and what neither
schema knows: mounted files exist, every FULFILL_* name is a real setting, the PDB selects the workers, the
API's probes hit routes the app serves, the set-up runs first, secrets are placeholders, build id = image tag."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from starlette.routing import Match

from common.config import Settings
from common.http import codec
from common.http.app import create_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
KUBERNETES = DEPLOY / "kubernetes"
# A release kubernetes-validate 1.37.0 ships schemas for, and current on managed clusters
KUBERNETES_VERSION = "1.33.0"
PLACEHOLDER = "REPLACE_ME"
IMAGE_USER = 10001
SETTING = re.compile(r"\bFULFILL_([A-Z0-9_]+)\b")


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def manifests() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests() if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [m["metadata"]["name"] for m in found])
    return found[0]


def containers_running(module: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(manifest, container) of every container whose command runs `python -m <module>`."""
    found = []
    for m in manifests():
        pod = _pod_spec(m)
        for container in pod["containers"] if pod else []:
            if container.get("command", [])[:3] == ["python", "-m", module]:
                found.append((m, container))
    assert found, module
    return found


def _pod_spec(m: dict[str, Any]) -> dict[str, Any] | None:
    spec: dict[str, Any] | None = m.get("spec", {}).get("template", {}).get("spec")
    return spec


def seconds(duration: str | int) -> float:
    """A compose duration ("45s", "1m30s") in seconds."""
    if isinstance(duration, int):
        return duration
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


# --- Schemas ---------------------------------------------------------------------------------------------------


def test_compose_matches_the_compose_spec_schema() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_kubernetes_manifest_is_valid_in_strict_mode(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "fulfillment"
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in manifest_files() if p.name != "secret.example.yaml"
    )
    assert {m["metadata"].get("namespace", "fulfillment") for m in manifests()} == {"fulfillment"}


# --- Compose -----------------------------------------------------------------------------------------------------


def test_every_file_a_compose_service_mounts_exists() -> None:
    mounted = 0
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):  # a bind mount; the others are named volumes
                assert (DEPLOY / source).resolve().is_file(), (name, source)
                mounted += 1
            else:
                assert source in compose()["volumes"], (name, source)
        if build := service.get("build"):
            assert (DEPLOY / build["context"] / build["dockerfile"]).is_file(), name
        for env_file in service.get("env_file", []):
            path = env_file["path"] if isinstance(env_file, dict) else env_file
            assert (DEPLOY / (path + ".example")).is_file(), (name, path)  # the real one is not committed
    assert mounted >= 5


def test_the_setup_service_runs_first_and_the_engine_waits_for_it() -> None:
    setup = services()["setup"]
    assert setup["command"][:3] == ["python", "-m", "workers.setup"]
    assert "--wait" in setup["command"]
    assert setup["restart"] == "no"
    for name in ("worker", "api"):
        assert services()[name]["depends_on"]["setup"] == {"condition": "service_completed_successfully"}, name
        assert "replicas" in services()[name]["deploy"], name


def test_the_worker_gets_longer_to_stop_than_its_graceful_shutdown() -> None:
    worker = services()["worker"]
    graceful = float(worker["environment"]["FULFILL_WORKER_GRACEFUL_SHUTDOWN"])
    assert seconds(worker["stop_grace_period"]) > graceful


def test_the_web_ui_decodes_through_the_api_codec_server() -> None:
    ui = services()["temporal-ui"]["environment"]
    endpoint = re.sub(r"\$\{\w+:-(.*)\}", r"\1", ui["TEMPORAL_CODEC_ENDPOINT"])
    assert endpoint.rstrip("/").endswith(codec.PREFIX)
    assert ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"


def test_prometheus_loads_our_rules_and_grafana_our_dashboard() -> None:
    prometheus = services()["prometheus"]["volumes"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert {job["job_name"] for job in config["scrape_configs"]} == {"fulfillment-worker", "fulfillment-api"}
    assert any(v.startswith("./grafana/fulfillment.json:") for v in services()["grafana"]["volumes"])


# --- Settings and secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [COMPOSE, ENV_EXAMPLE, *manifest_files()],
    ids=lambda p: str(p.relative_to(DEPLOY)),
)
def test_every_fulfill_variable_named_is_a_setting(path: Path) -> None:
    named = set(SETTING.findall(path.read_text()))
    unknown = {f"FULFILL_{n}" for n in named if n.lower() not in Settings.model_fields}
    assert not unknown, f"{path.name} names settings that do not exist: {sorted(unknown)}"


def test_the_config_map_and_the_secret_hold_settings_only() -> None:
    config = manifest("ConfigMap")["data"]
    secret = manifest("Secret")["stringData"]
    for key in [*config, *secret]:
        assert key.startswith("FULFILL_") and key[len("FULFILL_") :].lower() in Settings.model_fields, key
    assert not set(config) & set(secret)


def test_the_secret_example_holds_only_placeholders() -> None:
    secret = manifest("Secret")
    assert "data" not in secret
    assert secret["stringData"]
    for key, value in secret["stringData"].items():
        assert PLACEHOLDER in value, key


def test_the_compose_env_example_holds_only_placeholder_secrets() -> None:
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY|_SID|KEYS")
    entries = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    secrets = {k: v for k, v in entries.items() if secretish.search(k)}
    assert len(secrets) >= 10
    assert all(PLACEHOLDER in v for v in secrets.values()), secrets
    assert not (DEPLOY / "compose.env").exists() or "compose.env" in (ROOT / ".gitignore").read_text()


# --- Kubernetes ----------------------------------------------------------------------------------------------------


def test_the_setup_job_runs_workers_setup() -> None:
    job = manifest("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", "workers.setup"]
    assert "--wait" in container["command"]


def test_the_pdb_selects_the_worker_pods_only() -> None:
    selector = manifest("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    for m in manifests():
        if (pod := m.get("spec", {}).get("template")) is None:
            continue
        labels = pod["metadata"]["labels"]
        selected = selector.items() <= labels.items()
        runs_worker = any(c["command"][:3] == ["python", "-m", "workers.worker"] for c in pod["spec"]["containers"])
        assert selected == runs_worker, m["metadata"]["name"]


def test_worker_termination_grace_exceeds_its_graceful_shutdown() -> None:
    graceful = float(manifest("ConfigMap")["data"]["FULFILL_WORKER_GRACEFUL_SHUTDOWN"])
    for deployment, _ in containers_running("workers.worker"):
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > graceful


def test_every_pod_runs_as_the_image_user_with_resources() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"--uid {IMAGE_USER}" in dockerfile
    for m in manifests():
        if (pod := _pod_spec(m)) is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, m["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] == IMAGE_USER, m["metadata"]["name"]
        for container in pod["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]


def test_the_worker_build_id_is_its_image_tag() -> None:
    tags = set()
    for deployment, container in containers_running("workers.worker"):
        tag = container["image"].rsplit(":", 1)[1]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env["FULFILL_WORKER_BUILD_ID"] == tag, deployment["metadata"]["name"]
        assert deployment["metadata"]["name"].endswith(f"-{tag}")
        tags.add(tag)
    assert manifest("ConfigMap")["data"]["FULFILL_WORKER_DEPLOYMENT_NAME"]
    # The set-up and the API run the same image
    for module in ("workers.setup", "workers.api"):
        assert {c["image"].rsplit(":", 1)[1] for _, c in containers_running(module)} == tags, module


def test_the_api_probes_hit_routes_the_app_serves_on_its_port() -> None:
    app = create_app(Settings())

    def served(path: str) -> bool:
        """Whether a GET of `path` reaches one of the app's routes (as a kubelet's probe would)."""
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": [], "query_string": b""}
        return any(route.matches(scope)[0] == Match.FULL for route in app.routes)

    assert not served("/no-such-path")
    [(deployment, container)] = containers_running("workers.api")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(manifest("ConfigMap")["data"]["FULFILL_API_PORT"])
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and served(get["path"]), probe
        assert ports.get(get["port"], get["port"]) == ports["http"], probe
    service = manifest("Service", "fulfillment-api")["spec"]
    assert service["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["ports"]} == {"http"}
