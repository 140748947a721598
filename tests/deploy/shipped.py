"""Read the files under deploy/ the way their consumers do, so tests compare what is really
shipped: the Kubernetes manifests, the compose file, and the Dockerfile's instructions and ENV."""

from __future__ import annotations

import shlex
from typing import Any

import yaml

from tests.harness import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"

Json = dict[str, Any]


def kube(name: str) -> Json:
    """The one object in deploy/kubernetes/``name``."""
    [obj] = list(yaml.safe_load_all((KUBERNETES / name).read_text()))
    return dict(obj)


def container() -> Json:
    """The warpzip container of the Deployment."""
    [c] = kube("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def container_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container().get("env", [])}


def compose() -> Json:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for every instruction, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def image_env() -> dict[str, str]:
    """Every ENV key=value of the runtime image (the last stage)."""
    stages = [i for i, (keyword, _) in enumerate(dockerfile()) if keyword == "FROM"]
    env: dict[str, str] = {}
    for keyword, rest in dockerfile()[stages[-1]:]:
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def service_env() -> dict[str, str]:
    """WARPZIP_* as a warpzip pod sees them: the image's ENV, then the Deployment's env."""
    return {k: v for k, v in (image_env() | container_env()).items() if k.startswith("WARPZIP_")}
