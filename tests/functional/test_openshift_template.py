"""Offline checks of the OpenShift templates, and that each pod runs its role's image (test_containerfile.py
checks the images themselves).

A template is rendered here as ``oc process`` renders it: ``${NAME}`` is replaced
inside strings (keys too), a value that is exactly ``${{NAME}}`` becomes the JSON
value of the parameter, and ``generate: expression`` parameters get random values.
Every Kubernetes object is then validated against kubernetes-validate's strict
schemas; Routes and the Template itself get structural checks. KEDA's objects (the
autoscaling template) are validated against KEDA 2.16.1's schemas as
``tests/fixtures/keda/`` reconstructs them from its CRDs (``reconstruct.py`` says how),
and the HPA openshift/README.md offers instead against Kubernetes'. No cluster, no
PostgreSQL, RabbitMQ or Redis is needed.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator

import celery_config
import proxy
from accounts.keys import is_well_formed
from app.backlog_metrics import QUEUE_MESSAGES
from config import Settings
from config.paths import PROJECT_ROOT
from config.settings import declared_fields
from storage.queue_depths import ManagementApi
from tests.functional.containerfile_support import requirement_names, role_install

TEMPLATE_PATH = PROJECT_ROOT / "openshift" / "yolo-jobs-template.yaml"
AUTOSCALING_PATH = PROJECT_ROOT / "openshift" / "yolo-jobs-autoscaling-template.yaml"
README_PATH = PROJECT_ROOT / "openshift" / "README.md"
KEDA_SCHEMAS_PATH = PROJECT_ROOT / "tests" / "fixtures" / "keda" / "keda-2.16.1.schema.json"
# Flower's task list shows a job's progress in its Result column on OpenShift as under `make flower`.
FLOWER_COLUMNS = re.search(r"--tasks_columns=(\S+)", (PROJECT_ROOT / "Makefile").read_text())[1]

K8S_VERSION = kubernetes_validate.latest_version()
REGISTRY = "image-registry.openshift-image-registry.svc:5000/yolo"
# Each image parameter and the Containerfile target it names.
IMAGE_TARGETS = {"API_IMAGE": "api", "WORKER_CPU_IMAGE": "worker-cpu", "WORKER_GPU_IMAGE": "worker-gpu"}
TEST_IMAGES = {param: f"{REGISTRY}/yolo-jobs-{target}:test" for param, target in IMAGE_TARGETS.items()}
OPENSHIFT_ONLY_KINDS = {"Route"}
POD_KINDS = {"Deployment", "Job"}
SHARED_CLAIM = "ml-files-storage"
SHARED_MOUNT = "/shared-storage"
FILE_DEPLOYMENTS = (
    "yolo-jobs-api",
    "yolo-jobs-worker-inference",
    "yolo-jobs-worker-inference-cpu",
    "yolo-jobs-worker-maintenance",
)
# Which image each app pod runs (openshift/README.md, Images): torch only where a GPU is.
POD_IMAGES = {
    "yolo-jobs-schema": "API_IMAGE",
    "yolo-jobs-api": "API_IMAGE",
    "yolo-jobs-worker-inference": "WORKER_GPU_IMAGE",
    "yolo-jobs-worker-inference-cpu": "WORKER_CPU_IMAGE",
    "yolo-jobs-worker-maintenance": "WORKER_CPU_IMAGE",
    "yolo-jobs-worker-webhooks": "WORKER_CPU_IMAGE",
    "yolo-jobs-beat": "WORKER_CPU_IMAGE",
    "yolo-jobs-flower": "WORKER_CPU_IMAGE",
}
# The distribution each program (or Celery sub-command) the containers run comes from.
PROGRAMS = {
    "gunicorn": "gunicorn",
    "flask": "flask",
    "celery": "celery",
    "flower": "flower",
    "storage.maintenance": "psycopg2-binary",
}
WORKER_DEPLOYMENTS = (
    "yolo-jobs-worker-inference",
    "yolo-jobs-worker-inference-cpu",
    "yolo-jobs-worker-maintenance",
    "yolo-jobs-worker-webhooks",
)
SERVICE_DEPLOYMENTS = ("yolo-jobs-postgresql", "yolo-jobs-rabbitmq", "yolo-jobs-redis")
CELERY_HARD_TIME_LIMIT = celery_config.from_settings(Settings())["task_time_limit"]
PROXY_CONTAINER = "proxy"

STRING_PARAM = re.compile(r"\$\{([a-zA-Z0-9_]+)\}")
NON_STRING_PARAM = re.compile(r"^\$\{\{([a-zA-Z0-9_]+)\}\}$")
ANY_PARAM = re.compile(r"\$\{\{?([a-zA-Z0-9_]+)\}?\}")
# OpenShift's expression generator, as the template uses it: literal text and ``[ranges]{count}`` groups.
EXPRESSION = re.compile(r"^(?:[\w:-]|\[(?:\w-\w)+\]\{\d+\})+$")
EXPRESSION_PART = re.compile(r"\[((?:\w-\w)+)\]\{(\d+)\}|([\w:-])")
SECRET_LIKE_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
URL_USERINFO = re.compile(r"://([^/@:\s]*):([^/@\s]*)@")
KUBELET_REFERENCE = re.compile(r"^\$\([A-Z0-9_]+\)$")

Object = dict[str, Any]


class RenderError(ValueError):
    """The template cannot be rendered with the given parameters."""


# --- Rendering ----------------------------------------------------------------------


def load_template(path: Path = TEMPLATE_PATH) -> Object:
    return yaml.safe_load(path.read_text())


def generate_value(expression: str) -> str:
    """A random value from OpenShift's expression generator: literal text and ``[a-zA-Z0-9]{N}``-style groups."""
    if EXPRESSION.match(expression) is None:
        raise RenderError(f"unsupported generate expression {expression!r}")
    value = []
    for ranges, count, literal in EXPRESSION_PART.findall(expression):
        if literal:
            value.append(literal)
            continue
        alphabet = "".join(
            "".join(map(chr, range(ord(low), ord(high) + 1))) for low, high in re.findall(r"(\w)-(\w)", ranges)
        )
        value.extend(secrets.choice(alphabet) for _ in range(int(count)))
    return "".join(value)


def parameter_values(template: Object, overrides: Mapping[str, str]) -> dict[str, str]:
    """Each parameter's value: override, else default, else generated; required ones must have one."""
    declared = {param["name"] for param in template["parameters"]}
    unknown = set(overrides) - declared
    if unknown:
        raise RenderError(f"unknown parameters {sorted(unknown)}")
    values: dict[str, str] = {}
    for param in template["parameters"]:
        value = overrides.get(param["name"], param.get("value", ""))
        if not value and param.get("generate") == "expression":
            value = generate_value(param["from"])
        if not value and param.get("required"):
            raise RenderError(f"required parameter {param['name']} has no value")
        values[param["name"]] = value
    return values


def substitute(node: Any, values: Mapping[str, str]) -> Any:
    """Replace parameter references in every string (map keys included), as OpenShift does."""
    if isinstance(node, dict):
        return {substitute(key, values): substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(item, values) for item in node]
    if not isinstance(node, str):
        return node
    whole = NON_STRING_PARAM.match(node)
    if whole and whole[1] in values:
        try:
            return json.loads(values[whole[1]])
        except json.JSONDecodeError:
            return values[whole[1]]
    return STRING_PARAM.sub(lambda match: values.get(match[1], match[0]), node)


def render(template: Object, overrides: Mapping[str, str]) -> list[Object]:
    """The objects ``oc process`` would output for these parameter values."""
    return substitute(template["objects"], parameter_values(template, overrides))


# --- Lookups ------------------------------------------------------------------------


def find(objects: list[Object], kind: str, name: str) -> Object:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}"
    return matches[0]


def of_kind(objects: list[Object], kind: str) -> list[Object]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_spec(obj: Object) -> Object:
    return obj["spec"]["template"]["spec"]


def pod_objects(objects: list[Object]) -> list[Object]:
    return [obj for obj in objects if obj["kind"] in POD_KINDS]


def all_containers(spec: Object) -> list[Object]:
    return spec.get("initContainers", []) + spec["containers"]


def main_container(objects: list[Object], deployment: str) -> Object:
    return pod_spec(find(objects, "Deployment", deployment))["containers"][0]


def env_values(container: Object) -> dict[str, str]:
    return {env["name"]: env["value"] for env in container.get("env", []) if "value" in env}


def default_value(template: Object, name: str) -> str:
    return next(param["value"] for param in template["parameters"] if param["name"] == name)


def object_id(obj: Object) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
    elif isinstance(node, str):
        yield node


TEMPLATE = load_template()
RENDERED = render(TEMPLATE, TEST_IMAGES)
AUTOSCALING = load_template(AUTOSCALING_PATH)
SCALED = render(AUTOSCALING, {})


# --- The template and its parameters ---------------------------------------------------


BOTH_TEMPLATES = pytest.mark.parametrize("template", [TEMPLATE, AUTOSCALING], ids=["main", "autoscaling"])


@pytest.mark.parametrize(("template", "name"), [(TEMPLATE, "yolo-jobs"), (AUTOSCALING, "yolo-jobs-autoscaling")])
def test_template_header(template: Object, name: str) -> None:
    assert template["apiVersion"] == "template.openshift.io/v1"
    assert template["kind"] == "Template"
    assert template["metadata"]["name"] == name


@BOTH_TEMPLATES
def test_every_reference_is_declared_and_every_parameter_used(template: Object) -> None:
    declared = [param["name"] for param in template["parameters"]]
    used = {
        match
        for text in walk_strings([template["objects"], template.get("message", "")])
        for match in ANY_PARAM.findall(text)
    }
    assert len(declared) == len(set(declared)), "duplicate parameter names"
    assert used - set(declared) == set(), "references to undeclared parameters"
    assert set(declared) - used == set(), "parameters no object uses"


@BOTH_TEMPLATES
def test_parameters_are_documented(template: Object) -> None:
    for param in template["parameters"]:
        assert param.get("description"), f"{param['name']} has no description"
        assert isinstance(param.get("value", ""), str), f"{param['name']}'s value is not a string"
        if param.get("generate"):
            assert param["generate"] == "expression"
            assert EXPRESSION.match(param["from"]), f"{param['name']}: unexpected expression"


@pytest.mark.parametrize("image", IMAGE_TARGETS)
def test_required_parameter_without_value_fails(image: str) -> None:
    with pytest.raises(RenderError, match=image):
        render(TEMPLATE, {name: value for name, value in TEST_IMAGES.items() if name != image})


def test_unknown_parameter_fails() -> None:
    with pytest.raises(RenderError, match="NOT_A_PARAMETER"):
        render(TEMPLATE, {**TEST_IMAGES, "NOT_A_PARAMETER": "x"})


def test_rendering_leaves_no_parameter_reference() -> None:
    assert "${" not in json.dumps(RENDERED)
    assert "${" not in json.dumps(SCALED)


def test_generated_secrets_are_random_and_well_formed() -> None:
    first, second = (render(TEMPLATE, TEST_IMAGES) for _ in range(2))
    auth = [find(objects, "Secret", "yolo-jobs-flower")["stringData"]["basic-auth"] for objects in (first, second)]
    assert all(re.fullmatch(r"admin:[a-zA-Z0-9]{24}", value) for value in auth)
    assert auth[0] != auth[1]
    keys = [find(objects, "Secret", "yolo-jobs-app")["stringData"]["admin-api-key"] for objects in (first, second)]
    assert all(is_well_formed(key) for key in keys), "the generated admin key is one `keys bootstrap` imports"
    assert keys[0] != keys[1]


def test_every_object_is_labelled() -> None:
    for obj in RENDERED + SCALED:
        labels = obj["metadata"]["labels"]
        assert labels.get("app.kubernetes.io/part-of") == "yolo-jobs", object_id(obj)
        assert labels.get("app.kubernetes.io/component"), object_id(obj)


# --- Schema validation ----------------------------------------------------------------


@pytest.mark.parametrize("obj", [obj for obj in RENDERED if obj["kind"] not in OPENSHIFT_ONLY_KINDS], ids=object_id)
def test_kubernetes_object_is_valid(obj: Object) -> None:
    kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)


def test_object_kinds() -> None:
    assert {obj["kind"] for obj in RENDERED} == {
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "Service",
        "Route",
        "NetworkPolicy",
    }


@pytest.mark.parametrize("route", of_kind(RENDERED, "Route"), ids=object_id)
def test_route_points_at_a_service_port_with_edge_tls(route: Object) -> None:
    spec = route["spec"]
    assert route["apiVersion"] == "route.openshift.io/v1"
    assert spec["to"]["kind"] == "Service"
    service = find(RENDERED, "Service", spec["to"]["name"])
    ports = {port.get("name") for port in service["spec"]["ports"]} | {p["port"] for p in service["spec"]["ports"]}
    assert spec["port"]["targetPort"] in ports
    assert spec["tls"] == {"termination": "edge", "insecureEdgeTerminationPolicy": "Redirect"}


def test_the_api_route_appends_the_client_address() -> None:
    """The API pods' nginx trusts the last X-Forwarded-For entry: the router must always append it."""
    annotations = find(RENDERED, "Route", "yolo-jobs-api")["metadata"]["annotations"]
    assert annotations["haproxy.router.openshift.io/set-forwarded-headers"] == "append"
    conf = find(RENDERED, "ConfigMap", "yolo-jobs-proxy")["data"]["nginx.conf"]
    assert "real_ip_header X-Forwarded-For;" in conf and "real_ip_recursive" not in conf


def test_route_hosts_are_parameters() -> None:
    hosts = {route["metadata"]["name"]: route["spec"]["host"] for route in of_kind(TEMPLATE["objects"], "Route")}
    assert hosts == {"yolo-jobs-api": "${ROUTE_HOST}", "yolo-jobs-flower": "${FLOWER_ROUTE_HOST}"}


# --- Wiring ------------------------------------------------------------------------------


def test_service_selectors_match_deployment_pods() -> None:
    for service in of_kind(RENDERED, "Service"):
        selector = service["spec"]["selector"]
        pods = [
            pod_spec(deployment)
            for deployment in of_kind(RENDERED, "Deployment")
            if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, f"{object_id(service)} selects {len(pods)} Deployments"
        port_names = {port.get("name") for container in pods[0]["containers"] for port in container.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, f"{object_id(service)}: no container port {port['targetPort']}"


def test_deployment_selectors_match_their_pods() -> None:
    for deployment in of_kind(RENDERED, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_commands_are_exact() -> None:
    expected = {
        "yolo-jobs-api": ["gunicorn", "-c", "python:gunicorn_config", "app:create_app()"],
        "yolo-jobs-worker-inference": [
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            "inference",
            "--concurrency",
            "1",
            "--loglevel",
            "INFO",
            "-E",
        ],
        "yolo-jobs-worker-inference-cpu": [
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            "inference",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "-E",
        ],
        "yolo-jobs-worker-maintenance": [
            "celery",
            "-A",
            "tasks",
            "worker",
            "-Q",
            "maintenance",
            "--concurrency",
            "1",
            "-E",
        ],
        "yolo-jobs-worker-webhooks": ["celery", "-A", "tasks", "worker", "-Q", "webhooks", "--concurrency", "4", "-E"],
        "yolo-jobs-beat": ["celery", "-A", "tasks", "beat", "--schedule", "/tmp/celerybeat-schedule"],
        "yolo-jobs-flower": ["celery", "-A", "tasks", "flower", "--port=5555", f"--tasks_columns={FLOWER_COLUMNS}"],
    }
    for deployment, command in expected.items():
        assert main_container(RENDERED, deployment)["command"] == command, deployment


def test_schema_is_applied_before_the_api_serves() -> None:
    schema_command = ["python", "-m", "storage.maintenance", "schema"]
    init = pod_spec(find(RENDERED, "Deployment", "yolo-jobs-api"))["initContainers"]
    assert [container["command"] for container in init] == [schema_command]
    job = find(RENDERED, "Job", "yolo-jobs-schema")
    (container,) = pod_spec(job)["containers"]
    # The Job also imports the generated admin key (once; a second run finds it there).
    assert container["command"] == ["sh", "-c", f"{' '.join(schema_command)} && flask --app app keys bootstrap"]
    assert {
        "name": "ADMIN_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "yolo-jobs-app", "key": "admin-api-key"}},
    } in (container["env"])


def app_containers(objects: list[Object]) -> Iterator[tuple[Object, Object]]:
    """Each pod object of the app (not the own services) with each of its containers but the nginx sidecars."""
    for obj in pod_objects(objects):
        if obj["metadata"]["name"] not in SERVICE_DEPLOYMENTS:
            for container in all_containers(pod_spec(obj)):
                if container["name"] != PROXY_CONTAINER:  # nginx: tested with the API pods and with Flower
                    yield obj, container


def test_every_app_container_runs_its_roles_image_with_config_and_connections() -> None:
    assert {obj["metadata"]["name"] for obj, _container in app_containers(RENDERED)} == set(POD_IMAGES)
    for obj, container in app_containers(RENDERED):
        assert container["image"] == TEST_IMAGES[POD_IMAGES[obj["metadata"]["name"]]], object_id(obj)
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert sources == {"yolo-jobs-config", "yolo-jobs-connections"}, object_id(obj)
        assert "DATABASE_URL" in env_values(container), object_id(obj)


def test_torch_runs_only_where_a_gpu_is() -> None:
    """Every pod without a GPU runs a torch-less image (test_containerfile.py: their extras name no torch)."""
    for obj, container in app_containers(RENDERED):
        target = IMAGE_TARGETS[POD_IMAGES[obj["metadata"]["name"]]]
        assert (target == "worker-gpu") == ("nvidia.com/gpu" in container["resources"]["limits"]), object_id(obj)


def test_each_command_is_installed_in_its_image() -> None:
    """The programs a container runs come with its image's extras: Flower with ops, flask with the API's."""
    for obj, container in app_containers(RENDERED):
        installed = requirement_names(role_install(IMAGE_TARGETS[POD_IMAGES[obj["metadata"]["name"]]]).extras)
        words = " ".join(container["command"]).split()
        needed = {PROGRAMS[word] for word in words if word in PROGRAMS}
        assert needed and needed <= installed, f"{object_id(obj)}: {sorted(needed - installed)} not installed"


def test_config_map_sets_only_settings_the_code_reads() -> None:
    data = find(RENDERED, "ConfigMap", "yolo-jobs-config")["data"]
    for key in data:
        assert key in declared_fields(), f"{key} is not declared in config/settings.py"
    assert data["STORAGE_ROOT"] == SHARED_MOUNT
    assert data["YOLO_OFFLINE"] == "1"
    assert data["YOLO_MODELS"] == "", "shapes: the bundled model, wherever the image installed the service"


def test_connection_urls_default_to_own_services() -> None:
    env = env_values(main_container(RENDERED, "yolo-jobs-api"))
    assert "@yolo-jobs-postgresql:5432/" in env["DATABASE_URL"]
    assert "@yolo-jobs-rabbitmq:5672/" in env["CELERY_BROKER_URL"]
    assert "@yolo-jobs-redis:6379/" in env["CELERY_RESULT_BACKEND"]
    connections = find(RENDERED, "Secret", "yolo-jobs-connections")["stringData"]
    for url in (env["DATABASE_URL"], env["CELERY_BROKER_URL"], env["CELERY_RESULT_BACKEND"]):
        reference = URL_USERINFO.search(url)[2]
        assert reference[2:-1] in connections, f"{url} refers to a password yolo-jobs-connections lacks"


# --- Invariants ------------------------------------------------------------------------


def test_beat_is_a_singleton() -> None:
    beat = find(TEMPLATE["objects"], "Deployment", "yolo-jobs-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert find(RENDERED, "Deployment", "yolo-jobs-beat")["spec"]["replicas"] == 1


@pytest.mark.parametrize("gpus", ["1", "4"])
def test_inference_worker_gets_gpus_on_gpu_nodes(gpus: str) -> None:
    objects = render(TEMPLATE, {**TEST_IMAGES, "GPU_COUNT": gpus})
    spec = pod_spec(find(objects, "Deployment", "yolo-jobs-worker-inference"))
    container = spec["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["command"][container["command"].index("--concurrency") + 1] == gpus
    assert env_values(container)["WORKER_DEVICE"] == "auto"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in container["ports"]


@pytest.mark.parametrize("replicas", ["0", "3"])
def test_cpu_inference_workers_run_the_inference_queue_without_gpus(replicas: str) -> None:
    """A cluster without GPUs runs these instead of the GPU workers (INFERENCE_REPLICAS=0); none by default."""
    assert find(RENDERED, "Deployment", "yolo-jobs-worker-inference-cpu")["spec"]["replicas"] == 0
    objects = render(TEMPLATE, {**TEST_IMAGES, "INFERENCE_REPLICAS": "0", "INFERENCE_CPU_REPLICAS": replicas})
    assert find(objects, "Deployment", "yolo-jobs-worker-inference")["spec"]["replicas"] == 0
    deployment = find(objects, "Deployment", "yolo-jobs-worker-inference-cpu")
    assert deployment["spec"]["replicas"] == int(replicas)
    spec = pod_spec(deployment)
    assert "nodeSelector" not in spec and "tolerations" not in spec
    (container,) = spec["containers"]
    assert container["command"][container["command"].index("-Q") + 1] == "inference"
    assert env_values(container)["WORKER_DEVICE"] == "cpu"
    assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in container["ports"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(find(objects, "NetworkPolicy", "yolo-jobs-workers-from-monitoring")["spec"]["podSelector"], labels)


def test_only_the_inference_worker_asks_for_gpus() -> None:
    for obj in pod_objects(RENDERED):
        if obj["metadata"]["name"] == "yolo-jobs-worker-inference":
            continue
        for container in all_containers(pod_spec(obj)):
            assert "nvidia.com/gpu" not in json.dumps(container["resources"]), object_id(obj)


def test_workers_outlive_the_task_time_limit() -> None:
    """A worker stopped (a rollout, a scale-down) finishes its running task first: Celery's warm shutdown."""
    for name in WORKER_DEPLOYMENTS:
        grace = pod_spec(find(RENDERED, "Deployment", name))["terminationGracePeriodSeconds"]
        assert grace > CELERY_HARD_TIME_LIMIT, name


def test_file_pods_share_the_read_write_many_claim() -> None:
    claim = find(RENDERED, "PersistentVolumeClaim", SHARED_CLAIM)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == default_value(TEMPLATE, "STORAGE_CLASS")
    for name in FILE_DEPLOYMENTS:
        spec = pod_spec(find(RENDERED, "Deployment", name))
        volumes = {
            volume["name"]: volume.get("persistentVolumeClaim", {}).get("claimName") for volume in spec["volumes"]
        }
        mounts = {mount["mountPath"]: mount["name"] for mount in spec["containers"][0]["volumeMounts"]}
        assert volumes[mounts[SHARED_MOUNT]] == SHARED_CLAIM, name


def test_beat_mounts_no_files() -> None:
    assert "volumes" not in pod_spec(find(RENDERED, "Deployment", "yolo-jobs-beat"))


def test_api_serves_on_8080_with_probes() -> None:
    """8080 is the proxy's; gunicorn listens on the pod's loopback, and its probes come through the proxy."""
    container = main_container(RENDERED, "yolo-jobs-api")
    assert env_values(container)["API_BIND"] == "127.0.0.1:8081"
    assert env_values(container)["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    assert "ports" not in container
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    proxy = api_container(RENDERED, PROXY_CONTAINER)
    assert proxy["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert proxy["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert proxy["readinessProbe"]["tcpSocket"] == {"port": "http"}


def api_container(objects: list[Object], name: str) -> Object:
    (container,) = [
        c for c in pod_spec(find(objects, "Deployment", "yolo-jobs-api"))["containers"] if c["name"] == name
    ]
    return container


def test_api_pods_serve_through_the_buffering_proxy() -> None:
    spec = pod_spec(find(RENDERED, "Deployment", "yolo-jobs-api"))
    assert [container["name"] for container in spec["containers"]] == ["api", PROXY_CONTAINER]
    proxy = api_container(RENDERED, PROXY_CONTAINER)
    assert proxy["image"] == default_value(TEMPLATE, "PROXY_IMAGE")
    assert proxy["command"] == ["nginx", "-c", "/etc/yolo-jobs-proxy/nginx.conf", "-e", "stderr", "-g", "daemon off;"]
    assert "envFrom" not in proxy and "env" not in proxy, "the proxy needs no settings and no secrets"
    mounts = {mount["mountPath"]: mount for mount in proxy["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert mounts["/etc/yolo-jobs-proxy"]["readOnly"] is True
    assert volumes[mounts["/etc/yolo-jobs-proxy"]["name"]]["configMap"] == {"name": "yolo-jobs-proxy"}
    assert "sizeLimit" in volumes[mounts["/tmp/nginx"]["name"]]["emptyDir"]
    assert "quit" in " ".join(proxy["lifecycle"]["preStop"]["exec"]["command"]), "SIGTERM alone stops nginx at once"


def test_proxy_config_is_the_rendered_nginx_conf() -> None:
    """The ConfigMap holds proxy/nginx.conf.in as proxy.openshift_config() renders it, the body limit a parameter."""
    template_conf = find(TEMPLATE["objects"], "ConfigMap", "yolo-jobs-proxy")["data"]["nginx.conf"]
    assert template_conf == proxy.render(proxy.openshift_config())
    rendered = find(RENDERED, "ConfigMap", "yolo-jobs-proxy")["data"]["nginx.conf"]
    assert f"client_max_body_size {default_value(TEMPLATE, 'MAX_UPLOAD_BYTES')};" in rendered
    assert "listen 8080;" in rendered and "server 127.0.0.1:8081;" in rendered
    assert "proxy_request_buffering on;" in rendered and "/tmp/nginx/client_body" in rendered


def test_proxy_config_passes_nginx_t(tmp_path: Path) -> None:
    """nginx itself accepts the rendered file (its temp and pid paths moved under a writable directory)."""
    rendered = find(RENDERED, "ConfigMap", "yolo-jobs-proxy")["data"]["nginx.conf"]
    conf = tmp_path / "nginx.conf"
    conf.write_text(rendered.replace("/tmp/nginx", str(tmp_path)))
    check = subprocess.run(
        [proxy.nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stderr


def test_flower_basic_auth_and_metrics() -> None:
    container = main_container(RENDERED, "yolo-jobs-flower")
    basic_auth = next(env for env in container["env"] if env["name"] == "FLOWER_BASIC_AUTH")
    assert basic_auth["valueFrom"]["secretKeyRef"] == {"name": "yolo-jobs-flower", "key": "basic-auth"}
    assert [env["name"] for env in container["env"] if env["name"].startswith("FLOWER_")] == ["FLOWER_BASIC_AUTH"]
    annotations = find(RENDERED, "Service", "yolo-jobs-flower")["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "5555",
        "prometheus.io/path": "/metrics",
    }


def test_flower_route_goes_through_its_proxy() -> None:
    """The Route and the router reach only the sidecar's 8080 (tests/functional/test_flower_exposure.py runs its
    nginx.conf); Flower's 5555, where /metrics is open, is for the probes and the monitoring namespaces."""
    spec = pod_spec(find(RENDERED, "Deployment", "yolo-jobs-flower"))
    flower, sidecar = spec["containers"]
    assert sidecar["name"] == PROXY_CONTAINER and sidecar["image"] == default_value(TEMPLATE, "PROXY_IMAGE")
    assert sidecar["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert flower["ports"] == [{"name": "flower", "containerPort": 5555, "protocol": "TCP"}]
    assert flower["livenessProbe"]["httpGet"]["port"] == flower["readinessProbe"]["httpGet"]["port"] == "flower"
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    (config,) = [mount for mount in sidecar["volumeMounts"] if mount.get("readOnly")]
    assert volumes[config["name"]]["configMap"] == {"name": "yolo-jobs-flower-proxy"}
    route = find(RENDERED, "Route", "yolo-jobs-flower")
    service_ports = {port["name"]: port for port in find(RENDERED, "Service", "yolo-jobs-flower")["spec"]["ports"]}
    assert service_ports[route["spec"]["port"]["targetPort"]]["targetPort"] == "http"
    from_router = find(RENDERED, "NetworkPolicy", "yolo-jobs-from-router")["spec"]["ingress"]
    assert [rule["ports"] for rule in from_router] == [[{"protocol": "TCP", "port": 8080}]]
    from_monitoring = find(RENDERED, "NetworkPolicy", "yolo-jobs-flower-from-monitoring")["spec"]["ingress"]
    assert [rule["ports"] for rule in from_monitoring] == [[{"protocol": "TCP", "port": 5555}]]


def test_every_container_has_requests_and_limits() -> None:
    for obj in pod_objects(RENDERED):
        for container in all_containers(pod_spec(obj)):
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), object_id(obj)
            assert {"cpu", "memory"} <= resources["limits"].keys(), object_id(obj)


def test_pods_fit_the_restricted_v2_scc() -> None:
    for obj in pod_objects(RENDERED):
        spec = pod_spec(obj)
        assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        for container in all_containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, object_id(obj)
            assert context["capabilities"] == {"drop": ["ALL"]}, object_id(obj)
            assert "runAsUser" not in context and "privileged" not in context, object_id(obj)


def test_own_services_use_recreate_and_their_secrets() -> None:
    for name in SERVICE_DEPLOYMENTS:
        deployment = find(RENDERED, "Deployment", name)
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, name
        container = pod_spec(deployment)["containers"][0]
        assert container["livenessProbe"] and container["readinessProbe"], name
        secret_refs = {env["valueFrom"]["secretKeyRef"]["name"] for env in container["env"] if "valueFrom" in env}
        assert secret_refs == {name}, name


@pytest.mark.parametrize("replicas", [0, 1])
def test_services_switch_scales_only_the_own_services(replicas: int) -> None:
    objects = render(TEMPLATE, {**TEST_IMAGES, "SERVICES_REPLICAS": str(replicas)})
    for name in SERVICE_DEPLOYMENTS:
        assert find(objects, "Deployment", name)["spec"]["replicas"] == replicas
    assert find(objects, "Deployment", "yolo-jobs-api")["spec"]["replicas"] == 2
    assert find(objects, "Deployment", "yolo-jobs-worker-inference")["spec"]["replicas"] == 1


def test_external_service_urls_reach_the_app() -> None:
    url = "postgresql://yolo:$(DATABASE_PASSWORD)@db.example.com:5432/yolo_jobs"
    objects = render(TEMPLATE, {**TEST_IMAGES, "SERVICES_REPLICAS": "0", "DATABASE_URL": url})
    for obj in pod_objects(objects):
        if obj["metadata"]["name"] not in SERVICE_DEPLOYMENTS:
            assert env_values(pod_spec(obj)["containers"][0])["DATABASE_URL"] == url, object_id(obj)


# --- Secrets ------------------------------------------------------------------------------


def test_no_secret_in_plain_text() -> None:
    for obj in pod_objects(RENDERED):
        for container in all_containers(pod_spec(obj)):
            for name, value in env_values(container).items():
                assert not SECRET_LIKE_NAME.search(name), f"{object_id(obj)}: {name} must come from a Secret"
                userinfo = URL_USERINFO.search(value)
                if userinfo:
                    assert KUBELET_REFERENCE.match(userinfo[2]), f"{object_id(obj)}: {name} holds a password"
    for config in of_kind(RENDERED, "ConfigMap"):
        for name, value in config["data"].items():
            assert not SECRET_LIKE_NAME.search(name) and not URL_USERINFO.search(value), name


def test_template_secrets_hold_only_parameter_references() -> None:
    for secret in of_kind(TEMPLATE["objects"], "Secret"):
        assert "data" not in secret, object_id(secret)
        for key, value in secret["stringData"].items():
            assert STRING_PARAM.search(value), f"{object_id(secret)}: {key} is a literal"
            assert not re.search(r"[a-zA-Z0-9]", STRING_PARAM.sub("", value)), f"{object_id(secret)}: {key}"


def test_generated_passwords_are_generated() -> None:
    generated = {param["name"] for param in TEMPLATE["parameters"] if param.get("generate") == "expression"}
    assert {"POSTGRESQL_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD", "FLOWER_PASSWORD"} <= generated
    assert all(not param.get("value") for param in TEMPLATE["parameters"] if param["name"] in generated)


# --- Network policies ---------------------------------------------------------------


def selects(selector: Object, labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels and In/NotIn/Exists expressions) selects ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def ingress_peers(labels: Mapping[str, str]) -> list[Object]:
    """Every peer the template's policies let in to a pod with ``labels`` (each rule's ``from`` entries)."""
    peers = []
    for policy in of_kind(RENDERED, "NetworkPolicy"):
        if selects(policy["spec"]["podSelector"], labels):
            assert policy["spec"]["policyTypes"] == ["Ingress"], object_id(policy)
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("from"), f"{object_id(policy)}: a rule without 'from' admits everyone"
                peers.extend(rule["from"])
    return peers


def pod_labels(component: str) -> dict[str, str]:
    (obj,) = [
        o for o in pod_objects(RENDERED) if o["spec"]["template"]["metadata"]["labels"].get(COMPONENT) == component
    ]
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


COMPONENT = "app.kubernetes.io/component"
ROUTER = {"namespaceSelector": {"matchLabels": {"policy-group.network.openshift.io/ingress": ""}}}


def test_every_pod_is_behind_a_network_policy() -> None:
    for obj in pod_objects(RENDERED):
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert any(selects(p["spec"]["podSelector"], labels) for p in of_kind(RENDERED, "NetworkPolicy")), (
            f"{object_id(obj)}: no policy selects its pods, so anything in the cluster reaches them"
        )


MONITORING = {"namespaceSelector": {"matchLabels": {"network.openshift.io/policy-group": "monitoring"}}}


@pytest.mark.parametrize(("component", "peers"), [("api", [ROUTER]), ("flower", [ROUTER, MONITORING])])
def test_only_the_router_reaches_the_api_and_flower(component: str, peers: list[Object]) -> None:
    """And the monitoring namespaces reach Flower's /metrics (test_flower_route_goes_through_its_proxy: which port)."""
    assert ingress_peers(pod_labels(component)) == peers


@pytest.mark.parametrize("component", ["postgresql", "rabbitmq", "redis"])
def test_only_the_apps_pods_reach_the_services(component: str) -> None:
    peers = ingress_peers(pod_labels(component))
    assert peers, component
    for peer in peers:
        assert set(peer) == {"podSelector"}, f"{component}: only pods of this namespace, got {peer}"
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/part-of"] == "yolo-jobs"
    assert not selects(peers[0]["podSelector"], {"app": "something-else"}), "a stranger's pod is kept out"


def test_gunicorn_trusts_forwarded_headers_only_from_its_proxy() -> None:
    api = env_values(main_container(RENDERED, "yolo-jobs-api"))
    assert api["FORWARDED_ALLOW_IPS"] == "127.0.0.1", "never '*': only the proxy in the pod speaks to gunicorn"


# --- Autoscaling: KEDA's template, and the HPA openshift/README.md offers instead -----------

KEDA_SCHEMAS: dict[str, Object] = json.loads(KEDA_SCHEMAS_PATH.read_text())
SCALED_WORKERS = {"yolo-jobs-worker-inference": "inference", "yolo-jobs-worker-webhooks": "webhooks"}
MANAGEMENT_AUTH = "yolo-jobs-rabbitmq-management"


def keda_errors(obj: Object) -> list[str]:
    """What KEDA's schema (``tests/fixtures/keda/``) finds wrong with a ScaledObject or TriggerAuthentication."""
    validator = Draft202012Validator(KEDA_SCHEMAS[obj["kind"]])
    return sorted(f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(obj))


def trigger(objects: list[Object], name: str) -> Object:
    (only,) = find(objects, "ScaledObject", name)["spec"]["triggers"]
    return only


def rabbitmq_container() -> Object:
    return main_container(RENDERED, "yolo-jobs-rabbitmq")


@pytest.mark.parametrize("obj", SCALED, ids=object_id)
def test_autoscaling_object_is_valid(obj: Object) -> None:
    if obj["kind"] in KEDA_SCHEMAS:
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        assert keda_errors(obj) == []
    else:
        kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)


def test_autoscaling_object_kinds() -> None:
    assert sorted(object_id(obj) for obj in SCALED) == [
        "NetworkPolicy/yolo-jobs-rabbitmq-management-from-keda",
        "ScaledObject/yolo-jobs-worker-inference",
        "ScaledObject/yolo-jobs-worker-webhooks",
        "Secret/yolo-jobs-autoscaling",
        f"TriggerAuthentication/{MANAGEMENT_AUTH}",
    ]


@pytest.mark.parametrize(
    ("path", "value", "refused"),
    [
        (("spec", "minReplicas"), 1, "Additional properties"),  # the HPA's name, not KEDA's
        (("spec", "minReplicaCount"), "0", "is not of type 'integer'"),
        (
            (
                "spec",
                "advanced",
                "horizontalPodAutoscalerConfig",
                "behavior",
                "scaleDown",
                "stabilizationWindowSeconds",
            ),
            7200,
            "is greater than the maximum",
        ),
        (("spec", "triggers", 0, "metadata", "value"), 10, "is not of type 'string'"),
        (("spec", "triggers", 0, "authenticationRef"), {"secret": MANAGEMENT_AUTH}, "'name' is a required property"),
    ],
)
def test_the_keda_schema_refuses_what_keda_refuses(path: tuple[str | int, ...], value: Any, refused: str) -> None:
    """The reconstructed schema is closed and typed: a misspelt field, a quoted number, an unquoted value fail."""
    scaled = json.loads(json.dumps(find(SCALED, "ScaledObject", "yolo-jobs-worker-inference")))
    node = scaled
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert any(refused in error for error in keda_errors(scaled)), keda_errors(scaled)


@pytest.mark.parametrize("fewest", ["0", "1", "2"])
def test_the_inference_workers_may_scale_to_zero(fewest: str) -> None:
    objects = render(AUTOSCALING, {"INFERENCE_MIN_REPLICAS": fewest})
    scaled = find(objects, "ScaledObject", "yolo-jobs-worker-inference")
    assert scaled["spec"]["minReplicaCount"] == int(fewest) <= scaled["spec"]["maxReplicaCount"]
    assert keda_errors(scaled) == []


def test_the_cpu_inference_workers_may_be_the_ones_scaled() -> None:
    """On a cluster without GPUs: the same trigger on the same queue, for the CPU workers' Deployment."""
    name = "yolo-jobs-worker-inference-cpu"
    scaled = find(render(AUTOSCALING, {"INFERENCE_DEPLOYMENT": name}), "ScaledObject", name)
    assert scaled["spec"]["scaleTargetRef"] == {"name": name}
    assert keda_errors(scaled) == []
    command = main_container(RENDERED, name)["command"]
    (rabbitmq,) = scaled["spec"]["triggers"]
    assert command[command.index("-Q") + 1] == rabbitmq["metadata"]["queueName"] == "inference"


@pytest.mark.parametrize(("name", "queue"), SCALED_WORKERS.items())
def test_each_worker_scales_on_its_own_queue_counting_unacknowledged_messages(name: str, queue: str) -> None:
    scaled = find(SCALED, "ScaledObject", name)
    assert scaled["spec"]["scaleTargetRef"] == {"name": name}
    command = main_container(RENDERED, name)["command"]
    assert command[command.index("-Q") + 1] == queue, "the Deployment scaled consumes the queue counted"
    assert queue in {declared.name for declared in celery_config.QUEUES}
    rabbitmq = trigger(SCALED, name)
    assert rabbitmq["type"] == "rabbitmq" and rabbitmq["authenticationRef"] == {"name": MANAGEMENT_AUTH}
    # http: the management API's count, ready + unacknowledged (AMQP's would miss every task running).
    assert {key: rabbitmq["metadata"][key] for key in ("protocol", "mode", "queueName")} == {
        "protocol": "http",
        "mode": "QueueLength",
        "queueName": queue,
    }
    assert "excludeUnacknowledged" not in rabbitmq["metadata"]
    assert int(rabbitmq["metadata"]["value"]) >= 1
    # A scale-down lets the running task finish: the pod's grace outlasts Celery's hard time limit.
    assert pod_spec(find(RENDERED, "Deployment", name))["terminationGracePeriodSeconds"] > CELERY_HARD_TIME_LIMIT


def test_keda_reads_the_own_rabbitmqs_management_api_as_the_broker_user() -> None:
    metadata = trigger(SCALED, "yolo-jobs-worker-inference")["metadata"]
    host = urlsplit(metadata["host"])
    assert (host.username, host.password, host.path) == (None, None, "/"), "no credentials, no vhost in the host"
    service = find(RENDERED, "Service", "yolo-jobs-rabbitmq")
    management = next(port for port in service["spec"]["ports"] if port["name"] == "management")
    assert (host.hostname, host.port) == (service["metadata"]["name"], management["port"])
    assert {"name": "management", "containerPort": management["port"], "protocol": "TCP"} in rabbitmq_container()[
        "ports"
    ]
    broker = urlsplit(default_value(TEMPLATE, "CELERY_BROKER_URL"))
    assert metadata["vhostName"] == (unquote(broker.path[1:]) or "/")
    refs = {
        ref["parameter"]: ref
        for ref in find(SCALED, "TriggerAuthentication", MANAGEMENT_AUTH)["spec"]["secretTargetRef"]
    }
    assert set(refs) == {"username", "password"}
    username = find(SCALED, "Secret", refs["username"]["name"])["stringData"][refs["username"]["key"]]
    assert username == broker.username == env_values(rabbitmq_container())["RABBITMQ_DEFAULT_USER"]
    # The broker's password, kept in the main template's Secret: the own RabbitMQ's user has it.
    password = find(RENDERED, "Secret", refs["password"]["name"])["stringData"][refs["password"]["key"]]
    assert password == find(RENDERED, "Secret", "yolo-jobs-rabbitmq")["stringData"]["password"]


def test_the_own_rabbitmq_runs_its_management_api() -> None:
    """The official image's plain variant has no management API, and turns off the statistics it would count."""
    assert default_value(TEMPLATE, "RABBITMQ_IMAGE").endswith("-management")
    assert rabbitmq_container()["image"] == default_value(TEMPLATE, "RABBITMQ_IMAGE")


def test_the_api_reads_the_queue_depths_from_the_own_rabbitmq() -> None:
    """With RABBITMQ_MANAGEMENT_URL left empty, the API's settings point at the management port KEDA reads."""
    env = {
        **find(RENDERED, "ConfigMap", "yolo-jobs-config")["data"],
        **env_values(main_container(RENDERED, "yolo-jobs-api")),
    }
    assert env["RABBITMQ_MANAGEMENT_URL"] == ""
    settings = Settings.from_env(env)
    api = ManagementApi.of_broker(settings.broker_url, settings.broker_management_url)
    keda = urlsplit(trigger(SCALED, "yolo-jobs-worker-inference")["metadata"]["host"])
    assert api.base_url == f"{keda.scheme}://{keda.netloc}"
    assert (api.username, api.password) == ("yolo", "$(BROKER_PASSWORD)"), "filled in by the kubelet"


def test_keda_is_let_in_to_the_rabbitmq_management_port_only() -> None:
    policy = find(SCALED, "NetworkPolicy", "yolo-jobs-rabbitmq-management-from-keda")
    assert selects(policy["spec"]["podSelector"], pod_labels("rabbitmq"))
    assert not selects(policy["spec"]["podSelector"], pod_labels("api"))
    (rule,) = policy["spec"]["ingress"]
    keda = default_value(AUTOSCALING, "KEDA_NAMESPACE")
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": keda}}}]
    port = urlsplit(trigger(SCALED, "yolo-jobs-worker-inference")["metadata"]["host"]).port
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]


def readme_yaml() -> list[Object]:
    """The YAML blocks of openshift/README.md."""
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", README_PATH.read_text(), re.DOTALL)]


def test_the_readme_hpa_scales_a_worker_on_the_apis_queue_gauge() -> None:
    (hpa,) = [block for block in readme_yaml() if block.get("kind") == "HorizontalPodAutoscaler"]
    kubernetes_validate.validate(hpa, desired_version=K8S_VERSION, strict=True)
    target = hpa["spec"]["scaleTargetRef"]
    assert find(RENDERED, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["metric"]["name"] == QUEUE_MESSAGES
    queue = metric["external"]["metric"]["selector"]["matchLabels"]["queue"]
    assert queue == SCALED_WORKERS[target["name"]]
    (adapter,) = [block for block in readme_yaml() if "externalRules" in block]
    (rule,) = adapter["externalRules"]
    assert rule["seriesQuery"].startswith(QUEUE_MESSAGES + "{")
    assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"], "the HPA's selector reaches the query"
