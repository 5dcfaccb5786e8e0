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


def test_label_studio_keeps_its_data_in_the_postgres_service(compose):
    """Issue 39: Label Studio's DJANGO_DB/POSTGRE_* point at the postgres service, with one
    password for both, a volume for the database, and Label Studio waits for it to be ready."""
    services = compose["services"]
    ls, db = env_of(services["label-studio"]), services["postgres"]
    db_env = env_of(db)
    assert ls["DJANGO_DB"] == "default" and ls["POSTGRE_HOST"] == "postgres"
    assert ls["POSTGRE_PORT"] == "5432" and db["image"].startswith("postgres:")
    assert (ls["POSTGRE_NAME"], ls["POSTGRE_USER"]) == (db_env["POSTGRES_DB"], db_env["POSTGRES_USER"])
    assert ls["POSTGRE_PASSWORD"] == db_env["POSTGRES_PASSWORD"] and ls["POSTGRE_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    assert mounts(db)["/var/lib/postgresql/data"] == "postgres-data"
    assert services["label-studio"]["depends_on"]["postgres"]["condition"] == "service_healthy"


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


# --- compose.ray.yaml: `al-loop embed --engine ray` on a Ray head, a worker and a one-shot job ---

RAY_SERVICES = ("ray-head", "ray-worker", "embed")


@pytest.fixture(scope="module")
def ray_compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.ray.yaml").read_text())


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR} and $$, with ``env`` else the defaults."""
    env = env or {}

    def value(match: re.Match) -> str:
        name, operator, default = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env:
            return env[name]
        assert "?" not in operator, f"${{{name}}} is required: the ray override must run on compose.yaml's .env"
        return default if operator.endswith("-") else ""

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", value, text).replace("$$", "$")


def embed_steps(ray_compose: dict, env: dict[str, str] | None = None) -> list[list[str]]:
    """The embed job's shell script as commands (it joins with && and ; only)."""
    job = ray_compose["services"]["embed"]
    assert job["entrypoint"] == ["sh", "-c"] and len(job["command"]) == 1
    return [shlex.split(part) for part in re.split(r"&&|;", interpolate(job["command"][0], env)) if part.strip()]


def ray_start_params(argv: list[str]) -> dict:
    """`ray start` arguments as Ray's own CLI parses them (ray is a test dependency)."""
    scripts = pytest.importorskip("ray.scripts.scripts")
    assert argv[0] == "start", argv
    return scripts.start.make_context("start", list(argv[1:])).params


def size_bytes(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)b?", str(text).lower()).groups()
    return int(float(number) * 1024 ** " kmg".index(unit or " "))


def test_ray_compose_overrides_compose_yaml_with_its_image_volumes_and_tiles(compose, ray_compose):
    text = "\n".join(line for line in (DOCKER / "compose.ray.yaml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))  # compose does not interpolate comments
    assert ray_compose["name"] == compose["name"]  # one project: the same network and volumes
    services = ray_compose["services"]
    assert set(services) == set(RAY_SERVICES) and not set(services) & set(compose["services"])
    backend = compose["services"]["backend"]
    for name in RAY_SERVICES:
        service = services[name]
        assert service["profiles"] == ["ray"], f"{name} must not start with a plain `up`"
        assert {k: service["build"][k] for k in ("context", "dockerfile")} == \
            {k: backend["build"][k] for k in ("context", "dockerfile")}
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["image"] == services["ray-head"]["image"]  # one image on every node: same Ray, same al-loop
        assert service["image"].split(":")[0] == backend["image"].split(":")[0] and service["image"] != backend["image"]
        assert "ports" not in service  # Ray's ports stay on the project's network
        for source in mounts(service).values():
            assert source.startswith(("./", "$")) or (source in ray_compose["volumes"] and source in compose["volumes"])
        assert mounts(service)["/data/tiles"] == mounts(compose["services"]["al-loop"])["/data/tiles"]
    # Nothing new is required in docker/.env: every variable has a default or is in env.example.
    example = {line.split("=", 1)[0] for line in (DOCKER / "env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    for name, operator in re.findall(r"\$\{(\w+)(:?[-?]?)", text):
        assert operator in (":-", "-") or name in example, f"${{{name}}} has no default and is not in env.example"


def test_ray_compose_head_worker_and_job_form_one_cluster(ray_compose):
    services = ray_compose["services"]
    head, worker, job = services["ray-head"], services["ray-worker"], services["embed"]
    assert head["entrypoint"] == worker["entrypoint"] == ["ray"]
    head_args = ray_start_params([interpolate(str(a)) for a in head["command"]])
    assert head_args["head"] and head_args["block"] and head_args["include_dashboard"] is False
    port = head_args["port"]
    worker_args = ray_start_params([interpolate(str(a)) for a in worker["command"]])
    assert not worker_args["head"] and worker_args["block"] and worker_args["address"] == f"ray-head:{port}"
    steps = embed_steps(ray_compose)
    assert steps[0][:2] == ["ray", "start"]
    job_args = ray_start_params(steps[0][1:])
    # The job is a node without CPUs (a driver must run on a node), so the actors land on the workers.
    assert job_args["address"] == f"ray-head:{port}" and job_args["num_cpus"] == 0 and not job_args["block"]
    assert ["ray", "stop"] in steps and steps[-1] == ["exit", "$status"]  # leaves the cluster, keeps al-loop's code
    # The worker and the job wait for the head's GCS port; the image's own check is the backend's.
    assert str(port) in " ".join(head["healthcheck"]["test"])
    for service in (worker, job):
        assert service["depends_on"]["ray-head"]["condition"] == "service_healthy"
        assert service["healthcheck"] == {"disable": True}
    assert "ray-worker" in job["depends_on"] and job["restart"] == "no"
    assert all(services[name]["init"] is True for name in RAY_SERVICES)  # signals and reaping under `ray start --block`


def test_ray_compose_embed_command_parses_with_al_loop(ray_compose):
    from al_loop.cli import build_parser
    from al_loop.models.encoders import ENCODERS

    job = ray_compose["services"]["embed"]
    commands = [step for step in embed_steps(ray_compose) if step[0] == "al-loop"]
    assert len(commands) == 1
    args = build_parser().parse_args(commands[0][1:])
    assert args.command == "embed" and args.engine == "ray" and args.address == "auto"
    assert args.workers >= 2 and args.encoder in ENCODERS
    assert args.tiles == ["/data/tiles"] and "/data/tiles" in mounts(job)
    assert args.cache_dir == job["environment"]["AL_LOOP_CACHE_DIR"] and mounts(job)[args.cache_dir] == "embeddings"
    assert str(args.report.parent) in mounts(job)  # the report outlives the container
    # The knobs of the header: the cache on S3, more flags.
    env = {"EMBED_CACHE": "s3://bucket/embeddings", "EMBED_WORKERS": "4", "EMBED_ARGS": "--gpus-per-worker 1 --chunk-size 16"}
    args = build_parser().parse_args(next(s for s in embed_steps(ray_compose, env) if s[0] == "al-loop")[1:])
    assert (args.cache_dir, args.workers, args.gpus_per_worker, args.chunk_size) == ("s3://bucket/embeddings", 4, 1.0, 16)


def test_ray_nodes_share_the_cache_weights_tiles_and_s3_settings(compose, ray_compose):
    backend_env = env_of(compose["services"]["backend"])
    for name in RAY_SERVICES:
        service = ray_compose["services"][name]
        env, found = service["environment"], mounts(service)
        # The encoder actors write the cache and read tiles and weights on the workers, where the job put nothing.
        assert found[env["AL_LOOP_CACHE_DIR"]] == "embeddings" and env["AL_LOOP_CACHE_DIR"] == backend_env["AL_LOOP_CACHE_DIR"]
        assert found[env["AL_LOOP_WEIGHTS_DIR"]] == "weights" and env["AL_LOOP_WEIGHTS_DIR"] == backend_env["AL_LOOP_WEIGHTS_DIR"]
        assert found["/data/tiles"] == mounts(compose["services"]["backend"])["/data/tiles"]
        # Each node reads the S3 settings from its own environment: passed on when set, else unset.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            assert key in env and env[key] is None, f"{name}: {key} must be passed on, not set"
        assert env["RAY_AUTH_MODE"] == ray_compose["services"]["ray-head"]["environment"]["RAY_AUTH_MODE"]


def test_ray_nodes_have_room_in_dev_shm_for_their_object_store(ray_compose):
    services = ray_compose["services"]
    starts = {"ray-head": [interpolate(str(a)) for a in services["ray-head"]["command"]],
              "ray-worker": [interpolate(str(a)) for a in services["ray-worker"]["command"]],
              "embed": embed_steps(ray_compose)[0][1:]}
    for name, argv in starts.items():
        shm = size_bytes(interpolate(str(services[name]["shm_size"])))
        assert shm > 64 * 1024**2, f"{name}: Docker's default /dev/shm is 64 MB"
        store = ray_start_params(argv)["object_store_memory"]
        assert store and store <= shm, f"{name}: an object store larger than /dev/shm goes to /tmp, slowly"


def test_ray_image_installs_the_ray_extra(ray_compose, dockerfile):
    build_args = {k: str(v) for k, v in ray_compose["services"]["ray-head"]["build"].get("args", {}).items()}
    declared = {}
    for instruction, rest in dockerfile:
        if instruction == "ARG":
            name, _, default = rest.partition("=")
            declared[name.strip()] = build_args.get(name.strip(), default.strip().strip('"'))
    assert set(build_args) <= set(declared), f"build args the Dockerfile does not declare: {set(build_args) - set(declared)}"
    extras = set()
    for instruction, rest in dockerfile:
        if instruction == "RUN" and "pip install" in rest:
            text = re.sub(r"\$\{?(\w+)\}?", lambda m: declared.get(m.group(1), m.group(0)), rest)
            for word in shlex.split(text):
                found = re.fullmatch(r"\.\[([\w,-]+)\]", word)
                extras |= set(found.group(1).split(",")) if found else set()
    assert {"ray", "s3"} <= extras
