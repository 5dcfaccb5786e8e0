"""docker/: no engine here, so what can be checked is checked: the files parse, and every
service, port, volume, path and variable fits with the others, the code and the README."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from ml_backend.settings import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def env_of(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def mounts(service: dict) -> dict[str, str]:
    """container path -> source (named volume or host path)."""
    found = {}
    for volume in service.get("volumes") or []:
        rest, mode = volume.rsplit(":", 1)
        source, target = rest.rsplit(":", 1) if mode in ("ro", "rw") else (rest, mode)
        found[target] = source
    return found


def test_dockerfile_builds_from_files_that_exist_and_serves_on_its_exposed_port(dockerfile):
    instructions = [i for i, _ in dockerfile]
    assert instructions[0] in ("ARG", "FROM") and "FROM" in instructions
    for instruction, args in dockerfile:
        if instruction == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    env = {}
    for instruction, args in dockerfile:
        if instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    exposed = [args for i, args in dockerfile if i == "EXPOSE"]
    assert exposed == [env["AL_LOOP_BACKEND_PORT"]]
    assert env["AL_LOOP_BACKEND_HOST"] == "0.0.0.0"  # reachable from Label Studio's container
    volumes = [args for i, args in dockerfile if i == "VOLUME"][0]
    for key in ("AL_LOOP_CACHE_DIR", "AL_LOOP_WORKSPACE", "AL_LOOP_WEIGHTS_DIR"):
        assert env[key] in volumes
    assert [args for i, args in dockerfile if i == "ENTRYPOINT"] == ['["al-loop"]']
    assert [args for i, args in dockerfile if i == "CMD"] == ['["serve-backend"]']
    assert any("TORCH_INDEX" in args for i, args in dockerfile if i == "ARG")  # CPU by default, GPU by build arg


def test_compose_services_reach_each_other_by_name(compose):
    services = compose["services"]
    assert {"label-studio", "backend", "al-loop"} <= set(services)
    ls, backend, tool = services["label-studio"], services["backend"], services["al-loop"]
    ls_port = int(ls["ports"][0].split(":")[-1])
    for service in (backend, tool):
        url = env_of(service)["LABEL_STUDIO_URL"]
        assert url == f"http://label-studio:{ls_port}"  # the service name, on the compose network
    assert env_of(backend)["AL_LOOP_BACKEND_PORT"] == backend["ports"][0].split(":")[-1]
    assert env_of(backend)["AL_LOOP_BACKEND_HOST"] == "0.0.0.0"
    # Label Studio accepts a backend and its webhook on the network's private addresses.
    assert env_of(ls)["ML_BLOCK_LOCAL_IP"] == "false" and env_of(ls)["SSRF_PROTECTION_ENABLED"] == "false"
    assert tool["profiles"] == ["tools"] and backend["image"] == tool["image"]


def test_compose_volumes_and_paths_are_coherent(compose, dockerfile):
    services = compose["services"]
    ls, backend, tool = services["label-studio"], services["backend"], services["al-loop"]
    declared = set(compose["volumes"])
    for service in services.values():
        for source in mounts(service).values():
            assert source.startswith(("./", "$")) or source in declared, f"volume {source} is not declared"
    # Label Studio and the backend agree on the document root and see the tiles at the same path.
    root = env_of(ls)["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
    assert env_of(backend)["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == root
    assert mounts(ls)["/data/tiles"] == mounts(backend)["/data/tiles"] == mounts(tool)["/data/tiles"]
    assert "/data/tiles".startswith(root.rstrip("/") + "/")
    # Label Studio's data persists; the backend and al-loop share workspace, cache and weights.
    assert mounts(ls)[env_of(ls)["LABEL_STUDIO_BASE_DATA_DIR"]] == "label-studio-data"
    for key, volume in (("AL_LOOP_CACHE_DIR", "embeddings"), ("AL_LOOP_WORKSPACE", "workspace"), ("AL_LOOP_WEIGHTS_DIR", "weights")):
        for service in (backend, tool):
            assert mounts(service)[env_of(service)[key]] == volume
    # One token: Label Studio's user token is the API key the backend and al-loop use.
    assert env_of(ls)["LABEL_STUDIO_USER_TOKEN"].startswith("${LABEL_STUDIO_API_KEY")
    assert env_of(backend)["LABEL_STUDIO_API_KEY"].startswith("${LABEL_STUDIO_API_KEY")
    assert env_of(ls)["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_every_backend_variable_compose_sets_is_one_the_code_reads(compose):
    read_by_code = set(ENVIRONMENT.values()) | {"AL_LOOP_WEIGHTS_DIR"}
    for name in ("backend", "al-loop"):
        unknown = set(env_of(compose["services"][name])) - read_by_code
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_gpu_override_and_env_example_fit(compose):
    gpu = yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())
    assert set(gpu["services"]) <= set(compose["services"])
    backend = gpu["services"]["backend"]
    assert backend["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "cu" in backend["build"]["args"]["TORCH_INDEX"]
    example = dict(line.split("=", 1) for line in (DOCKER / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    used = set(re.findall(r"\$\{([A-Z_]+)", (DOCKER / "compose.yaml").read_text()))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (DOCKER / "compose.yaml").read_text()))
    assert required <= set(example) and set(example) <= used
    assert re.fullmatch(r"[0-9a-f]{40}", example["LABEL_STUDIO_API_KEY"])


def test_readme_docker_commands_name_real_services(compose):
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"docker compose (?:-f \S+ )*(?:run --rm|up -d|logs|stop|down)\s*([\w-]*)", readme)
    assert commands, "the README shows how to run the compose file"
    for service in filter(None, commands):
        assert service in compose["services"], f"README runs unknown service {service}"
    for name in ("docker/compose.yaml", "docker/env.example", "compose.gpu.yaml"):
        assert name in readme
