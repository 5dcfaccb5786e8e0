"""Every setting of al-loop and its ML backend, and the one resolver that gives them values.

A value comes from the first of: a command-line flag, the environment, the workspace
(``config.yaml``'s ``settings``, written by ``init`` and by ``--save``), the default. The
CLI and the backend both call :func:`resolve`, so one name means one thing everywhere, a
value is typed and checked once, and :func:`Settings.source` says where it came from
(``al-loop config``). Nothing below the command line reads ``os.environ`` for these.

The names the parser offers as choices live here too (torch-free, so ``--help`` is
instant); the registries that build the things named (encoders, strategies, runtimes)
are tested to hold the same names.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from al_loop.errors import UsageError

# SAM 2.1 by the names of its encoders: an image encoder for the domain decoder and a model for
# box and point prompts alike.
SAM2_MODELS = ("sam2.1-hiera_t", "sam2.1-hiera_s", "sam2.1-hiera_b+", "sam2.1-hiera_l")
MODELS = ("vit_b", "vit_l", "vit_h", "vit_t", *SAM2_MODELS, "tiny")
OFFICIAL_MODELS = tuple(m for m in MODELS if m != "tiny")
ENCODERS = ("filterbank", "sam-vit_b", "sam-vit_l", "sam-vit_h", "sam-vit_t", *SAM2_MODELS, "sam-tiny")
PRECISIONS = ("fp32", "bf16", "int8")
RUNTIMES = ("torch", "openvino", "onnx")
STRATEGIES = ("entropy", "margin", "least_confident", "bald", "rare_types", "random", "diverse", "density", "object_entropy",
              "coreset", "typiclust", "hybrid")
ORACLES = ("box", "sam")
REVIEW_POLICIES = ("leave-out", "wait")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Where a value came from, strongest first.
FLAG, ENVIRONMENT, WORKSPACE, DEFAULT = "flag", "environment", "workspace", "default"


def _setting(default: Any, env: str | None, help: str, *, kind: type | None = None, choices: tuple = (),
             kept: bool = False, secret: bool = False, positive: bool = False, group: str = "loop",
             flag: bool = True) -> Any:
    """A field of :class:`Settings`: its default, environment variable, help, and checks.
    ``kept``: the workspace remembers it (set at ``init``, changed with ``--save``). ``flag``: some
    command takes it on the command line (else only its environment variable sets it)."""
    meta = dict(env=env, help=help, kind=kind or type(default), choices=choices, kept=kept, secret=secret,
                positive=positive, group=group, flag=flag)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; ``sources`` maps each name to flag / environment / workspace / default."""

    # -- the loop: kept in the workspace ------------------------------------------------------
    encoder: str = _setting("filterbank", "AL_LOOP_ENCODER", "image encoder the domain decoder learns on: sam-vit_b, "
                            "sam-vit_l, sam-vit_h (frozen SAM embeddings), sam-vit_t (MobileSAM: SAM's embedding "
                            "from a TinyViT, several times faster on a CPU), sam2.1-hiera_t/_s/_b+/_l (SAM 2.1's "
                            "Hiera), filterbank (no weights needed: the "
                            "no-weights baseline), or sam-tiny (tests only)", choices=ENCODERS, kept=True)
    model: str = _setting("vit_b", "AL_LOOP_MODEL", "SAM model for box and point prompts: vit_b, vit_l, vit_h, "
                          "vit_t (MobileSAM), sam2.1-hiera_t/_s/_b+/_l (SAM 2.1) (official checkpoints: `al-loop weights download`) or tiny (random weights, meaningless masks: for tests and CI only)",
                          choices=MODELS, kept=True)
    checkpoint: str | None = _setting(None, "AL_LOOP_CHECKPOINT", "SAM checkpoint file (default: the model's file "
                                      "in the weights folder)", kind=str, kept=True)
    precision: str | None = _setting(None, "AL_LOOP_PRECISION", "SAM image-encoder precision: fp32 (the reference "
                                     "embeddings), bf16 or int8 (approximate, cached apart); default: the engine "
                                     "measured fastest on this machine that keeps the contract (`al-loop weights "
                                     "prepare`), else fp32", kind=str, choices=PRECISIONS, kept=True)
    runtime: str | None = _setting(None, "AL_LOOP_RUNTIME", "engine for SAM's image encoder: torch, openvino or onnx "
                                   "(default: measured, as for --precision; before a measurement, openvino for fp32 "
                                   "on a CPU-only machine where it is installed, else torch)", kind=str,
                                   choices=RUNTIMES, kept=True)
    cache_dir: str = _setting(str(Path("~/.cache/al-loop/embeddings")), "AL_LOOP_CACHE_DIR", "embedding cache shared "
                              "by the CLI and the backend: a folder or a URL such as s3://bucket/prefix", kept=True)
    # object_entropy is the default since 2026-12-07: over 10 seeds on the grouped HiRISE split it was
    # level with random or ahead at every budget, and the tile-mean entropy, the default before, was
    # behind random at 10 tiles with 95 % confidence (docs: results/experiment.md). No strategy
    # beats random at every budget with confidence.
    strategy: str = _setting("object_entropy", "AL_LOOP_STRATEGY", "how next-batch ranks the unlabelled tiles",
                             choices=STRATEGIES, kept=True)
    batch_size: int = _setting(5, "AL_LOOP_BATCH_SIZE", "tasks next-batch pushes per round", positive=True, kept=True)
    epochs: int = _setting(100, "AL_LOOP_EPOCHS", "decoder training epochs", positive=True, kept=True)
    stop_threshold: float = _setting(0.99, "AL_LOOP_STOP_THRESHOLD", "the stopping rule: consecutive decoders' "
                                     "agreement (Cohen's kappa on the validation tiles' pixels) that counts as "
                                     "'stopped changing'", positive=True, kept=True)
    stop_window: int = _setting(3, "AL_LOOP_STOP_WINDOW", "the stopping rule: rounds in a row the agreement must "
                                "stay at or above the threshold", positive=True, kept=True)
    annotators: int = _setting(1, "AL_LOOP_ANNOTATORS", "experts who answer each pushed task (Label Studio's "
                               "overlap; 2 or more: next-batch waits for each of them, measures their agreement and "
                               "trains on their consensus)", positive=True, kept=True)
    review: str = _setting("leave-out", "AL_LOOP_REVIEW", "a task the team disagrees on goes to the 'Review' tab; "
                           "until a reviewer answers it, training leaves it out (leave-out) or next-batch waits "
                           "for the review (wait)", choices=REVIEW_POLICIES, kept=True)
    review_below: float = _setting(0.6, "AL_LOOP_REVIEW_BELOW", "a task goes to review when its experts' mean mask "
                                   "IoU of matched pits is below this, or a pit has no majority", positive=True,
                                   kept=True)
    # -- where things are ---------------------------------------------------------------------
    workspace: str = _setting("al-workspace", "AL_LOOP_WORKSPACE", "the al-loop workspace (config.yaml, "
                              "state.sqlite, decoders/)", group="paths")
    weights_dir: str = _setting(str(Path("~/.cache/al-loop/weights")), "AL_LOOP_WEIGHTS_DIR", "where SAM checkpoints "
                                "are kept", group="paths", flag=False)
    weights_url: str | None = _setting(None, "AL_LOOP_WEIGHTS_URL", "a mirror `weights download` fetches "
                                       "checkpoints from instead of their publishers (a folder URL; each file under "
                                       "its own name)", kind=str, group="paths", flag=False)
    runtime_cache: str = _setting(str(Path("~/.cache/al-loop/runtimes")), "AL_LOOP_RUNTIME_CACHE", "where the "
                                  "encoders converted for OpenVINO and ONNX Runtime, and the engine measurements, "
                                  "are kept", group="paths", flag=False)
    pds_url: str | None = _setting(None, "AL_LOOP_PDS_URL", "the HiRISE archive `fetch` downloads products from "
                                   "(default: the PDS's own address; a mirror or a local copy for tests)", kind=str,
                                   group="paths", flag=False)
    label_studio_url: str | None = _setting(None, "LABEL_STUDIO_URL", "Label Studio's address (init records it in "
                                            "the workspace; the backend uses it when /setup has not sent it)", kind=str,
                                            group="paths")
    label_studio_api_key: str | None = _setting(None, "LABEL_STUDIO_API_KEY", "Label Studio API token (Account & "
                                                "Settings > Access Token)", kind=str, secret=True, group="paths")
    local_root: str | None = _setting(None, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "folder local paths and "
                                      "/data/local-files URLs are read from directly", kind=str, group="paths")
    # -- the ML backend -----------------------------------------------------------------------
    host: str = _setting("127.0.0.1", "AL_LOOP_BACKEND_HOST", "interface the backend listens on", group="backend")
    port: int = _setting(9090, "AL_LOOP_BACKEND_PORT", "the backend's port", group="backend")
    threads: int = _setting(8, "AL_LOOP_BACKEND_THREADS", "backend request threads (one is kept for /health)",
                            positive=True, group="backend")
    log_level: str = _setting("info", "AL_LOOP_LOG_LEVEL", "backend log level", choices=LOG_LEVELS, group="backend")
    basic_auth_user: str | None = _setting(None, "BASIC_AUTH_USER", "backend basic-auth user (set both or neither)",
                                           kind=str, group="backend", flag=False)
    basic_auth_pass: str | None = _setting(None, "BASIC_AUTH_PASS", "backend basic-auth password", kind=str,
                                           secret=True, group="backend", flag=False)
    # Limits (what one request may cost the backend); their defaults are the modules' own.
    download_deadline: float = _setting(30.0, "AL_LOOP_DOWNLOAD_DEADLINE", "seconds for one image download, first "
                                        "to last byte", positive=True, group="limits", flag=False)
    request_deadline: float = _setting(90.0, "AL_LOOP_REQUEST_DEADLINE", "seconds for one /predict; tasks not "
                                       "reached by then answer 504", positive=True, group="limits", flag=False)
    parallel_downloads: int = _setting(4, "AL_LOOP_PARALLEL_DOWNLOADS", "image downloads at once, over all "
                                       "requests", positive=True, group="limits", flag=False)
    max_body_mb: float = _setting(32.0, "AL_LOOP_MAX_BODY_MB", "request body size (MiB)", positive=True, group="limits", flag=False)
    max_regions: int = _setting(100, "AL_LOOP_MAX_REGIONS", "boxes or points per task or prompt", positive=True,
                                group="limits", flag=False)
    max_image_pixels: int = _setting(4096 * 4096, "AL_LOOP_MAX_IMAGE_PIXELS", "a larger image is refused before it "
                                     "is decoded", positive=True, group="limits", flag=False)
    min_image_side: int = _setting(16, "AL_LOOP_MIN_IMAGE_SIDE", "a smaller image has nothing to segment",
                                   positive=True, group="limits", flag=False)

    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        return self.sources.get(name, DEFAULT)

    def kept(self) -> dict[str, Any]:
        """The values a workspace keeps (what a round records it ran with)."""
        return {name: getattr(self, name) for name in KEPT}

    def to_keep(self) -> dict[str, Any]:
        """What ``init`` writes into a new workspace: each kept setting given by flag or environment,
        and those its embeddings and decoders depend on even when defaulted (a later release's
        default must not change a running project's encoder or cache)."""
        return {name: self.cache_location if name == "cache_dir" else getattr(self, name)
                for name in KEPT if self.source(name) != DEFAULT or name in IDENTITY}

    def rows(self) -> list[dict]:
        """Every setting with its value (secrets hidden), source and environment variable."""
        return [{"name": f.name, "value": _shown(f, getattr(self, f.name)), "source": self.source(f.name),
                 "env": f.metadata["env"], "kept": f.metadata["kept"]} for f in setting_fields()]

    @property
    def cache_location(self) -> str:
        """``cache_dir`` with ``~`` expanded (a URL stays as it is)."""
        return self.cache_dir if "://" in self.cache_dir else str(Path(self.cache_dir).expanduser())


def setting_fields() -> list:
    return [f for f in fields(Settings) if f.name != "sources"]


KEPT = tuple(f.name for f in setting_fields() if f.metadata["kept"])
IDENTITY = ("encoder", "model", "precision", "cache_dir")  # kept by init even when defaulted
NAMES = tuple(f.name for f in setting_fields())


def resolve(flags: Mapping[str, Any] | None = None, workspace: Mapping[str, Any] | None = None,
            environ: Mapping[str, str] | None = None, kind: type[Settings] | None = None) -> Settings:
    """Settings from ``flags`` (None values = not given) over ``environ`` (default os.environ)
    over ``workspace`` (its saved settings) over the defaults; a bad value is a UsageError
    naming where it came from."""
    flags, workspace = flags or {}, workspace or {}
    environ = os.environ if environ is None else environ
    unknown = sorted(set(flags) - set(NAMES))
    if unknown:
        raise ValueError(f"not settings: {unknown}")  # a programming error, not the user's
    values, sources = {}, {}
    for f in setting_fields():
        env = f.metadata["env"]
        for source, value in ((FLAG, flags.get(f.name)), (ENVIRONMENT, environ.get(env) if env else None),
                              (WORKSPACE, workspace.get(f.name) if f.metadata["kept"] else None)):
            if value is not None and value != "":
                values[f.name], sources[f.name] = _checked(f, value, source), source
                break
    settings = (kind or Settings)(**values, sources=sources)
    if bool(settings.basic_auth_user) != bool(settings.basic_auth_pass):
        # Half a configuration used to switch auth off without a word: refuse instead.
        raise UsageError("basic auth is half-configured: set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
    return settings


def from_environment(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One setting from the environment over its default, typed and checked as :func:`resolve`
    does: for the library's deep defaults (the weights folder, the converted-encoder cache, the
    engine) where no resolved :class:`Settings` is handed down. Paths keep their ``~``."""
    f = _field(name)
    environ = os.environ if environ is None else environ
    value = environ.get(f.metadata["env"]) if f.metadata["env"] else None
    return _checked(f, value, ENVIRONMENT) if value is not None and value != "" else f.default


def local_path(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """A folder setting from the environment (or its default) as a path, ``~`` expanded."""
    return Path(from_environment(name, environ)).expanduser()


def override(settings: Settings, **flags: Any) -> Settings:
    """``settings`` with the given (non-None) values as flags."""
    given = {k: _checked(_field(k), v, FLAG) for k, v in flags.items() if v is not None}
    return replace(settings, **given, sources={**settings.sources, **dict.fromkeys(given, FLAG)})


def where(name: str, source: str) -> str:
    """How a user names a setting from ``source``: its flag, its variable, or the workspace key."""
    f = _field(name)
    if source == ENVIRONMENT and f.metadata["env"]:
        return f"${f.metadata['env']}"
    if source == WORKSPACE:
        return f"the workspace's {name}"
    return "--" + name.replace("_", "-")


def _field(name: str):
    return next(f for f in setting_fields() if f.name == name)


def _checked(f, value: Any, source: str) -> Any:
    """``value`` as the setting's type, within its choices and bounds."""
    meta, kind = f.metadata, f.metadata["kind"]
    try:
        typed = value if isinstance(value, kind) and not isinstance(value, bool) else kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where(f.name, source)} must be a {kind.__name__}, not {value!r}") from None
    if meta["choices"] and typed not in meta["choices"]:
        raise UsageError(f"{where(f.name, source)} is {typed!r}; choose one of {', '.join(meta['choices'])}")
    if meta["positive"] and typed <= 0:
        raise UsageError(f"{where(f.name, source)} must be positive, not {value!r}")
    return typed


def _shown(f, value: Any) -> Any:
    return "(set, hidden)" if f.metadata["secret"] and value else value


def help_for(name: str) -> str:
    """A flag's help: the setting's own words, its default and its variable."""
    f = _field(name)
    default = f.default if f.default is not None else "none"
    return f"{f.metadata['help']} (default {default}; ${f.metadata['env']})"


FLAG_OF = {"label_studio_api_key": "--token"}  # where a flag is not the setting's name


def flag_of(name: str) -> str:
    """The command-line flag of a setting, wherever a command takes it."""
    return FLAG_OF.get(name, "--" + name.replace("_", "-"))


def markdown_table() -> str:
    """The README's table of settings, generated here so that it cannot drift."""
    lines = ["| setting | flag | environment | kept in the workspace | default | what it is |",
             "|---|---|---|---|---|---|"]
    for f in setting_fields():
        default = "" if f.default is None else f"`{f.default}`"
        flag = f"`{flag_of(f.name)}`" if f.metadata["flag"] else "none"
        lines.append(f"| {f.name} | {flag} | `{f.metadata['env']}` | "
                     f"{'yes' if f.metadata['kept'] else ''} | {default} | {f.metadata['help']} |")
    return "\n".join(lines)
