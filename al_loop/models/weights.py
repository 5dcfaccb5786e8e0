"""Official SAM checkpoints: where they come from, where they are kept, how they are checked.

The official file names carry the first six hex digits of the file's md5
(``sam_vit_b_01ec64.pth``), so a download is verified against its own name.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from al_loop.errors import WeightsError
from al_loop.settings import from_environment, local_path

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


@dataclass(frozen=True)
class Checkpoint:
    model_type: str
    filename: str
    md5_prefix: str  # SAM's files name their md5's first digits; "" for a file pinned by sha256 instead
    size_mb: int
    url: str | None = None  # None: OFFICIAL_BASE_URL + filename
    sha256: str | None = None

    @property
    def tag(self) -> str:
        """What names these weights in cache ids."""
        return self.md5_prefix or (self.sha256 or "")[:6]

    def problem(self, path: Path) -> str | None:
        """Why the file at ``path`` is not this checkpoint (None: it is)."""
        if self.sha256:
            got = sha256_of(path)
            return None if got == self.sha256 else f"has sha256 {got[:12]}..., expected {self.sha256[:12]}..."
        got = md5_of(path)
        return None if got.startswith(self.md5_prefix) else f"has md5 {got[:12]}..., expected a prefix of {self.md5_prefix}"


CHECKPOINTS: dict[str, Checkpoint] = {
    "vit_b": Checkpoint("vit_b", "sam_vit_b_01ec64.pth", "01ec64", 375),
    "vit_l": Checkpoint("vit_l", "sam_vit_l_0b3195.pth", "0b3195", 1250),
    "vit_h": Checkpoint("vit_h", "sam_vit_h_4b8939.pth", "4b8939", 2560),
    # MobileSAM (Apache-2.0): the file in its authors' repository. The sha256 and size are the ones
    # published by independent users of the file (40 728 226 bytes); this machine cannot download it.
    "vit_t": Checkpoint("vit_t", "mobile_sam.pt", "", 41,
                        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"),
}
# SAM 2.1 (Apache-2.0), Meta's release of 2024-09-28. Meta publishes no hash of these files and this
# machine cannot download them, so they are NOT pinned: the tag names the release, and a download
# is checked only for arriving whole. Pin each sha256 here once it is read from a trusted copy.
SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
for _name, _file, _mb in (("sam2.1-hiera_t", "sam2.1_hiera_tiny.pt", 149), ("sam2.1-hiera_s", "sam2.1_hiera_small.pt", 176),
                          ("sam2.1-hiera_b+", "sam2.1_hiera_base_plus.pt", 309),
                          ("sam2.1-hiera_l", "sam2.1_hiera_large.pt", 857)):
    CHECKPOINTS[_name] = Checkpoint(_name, _file, "092824", _mb, url=SAM2_BASE_URL + _file)


def weights_dir() -> Path:
    """Where checkpoints live: ``$AL_LOOP_WEIGHTS_DIR`` or ``~/.cache/al-loop/weights``."""
    return local_path("weights_dir")


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    return _digest(path, hashlib.md5(), chunk)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    return _digest(path, hashlib.sha256(), chunk)


def _digest(path: Path, digest, chunk: int) -> str:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(model_type: str, checkpoint: str | Path | None = None) -> Path:
    """The checkpoint file to load: an explicit path, else the official file in the cache dir."""
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"checkpoint {path} does not exist")
        return path
    if model_type not in CHECKPOINTS:
        raise WeightsError(f"no official checkpoint for model type {model_type!r}")
    path = weights_dir() / CHECKPOINTS[model_type].filename
    if not path.is_file():
        raise WeightsError(
            f"SAM weights for {model_type} not found at {path}. "
            f"Run `al-loop weights download {model_type}` (about {CHECKPOINTS[model_type].size_mb} MB), "
            f"or pass --checkpoint PATH to a file you already have; without weights, `--encoder "
            f"filterbank` learns and boxes become the ellipse inscribed in them."
        )
    return path


def has_weights(model_type: str, checkpoint: str | Path | None = None) -> bool:
    """Whether SAM ``model_type`` can load real weights here (``tiny`` is built from a seed). A
    named ``checkpoint`` that does not exist is a WeightsError, not a quiet False: it is a typo."""
    if model_type == "tiny":
        return True
    if checkpoint is not None:
        resolve_checkpoint(model_type, checkpoint)
        return True
    return model_type in CHECKPOINTS and (weights_dir() / CHECKPOINTS[model_type].filename).is_file()


def download(
    model_type: str,
    dest_dir: str | Path | None = None,
    base_url: str | None = None,
    checkpoint: Checkpoint | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch an official checkpoint into ``dest_dir`` and verify it (md5 prefix, or sha256).

    The file appears under its final name only once verified, so an interrupted or
    corrupt download never poses as a good checkpoint.
    """
    if checkpoint is None:
        if model_type not in CHECKPOINTS:
            raise WeightsError(f"unknown model type {model_type!r}; choose one of {', '.join(CHECKPOINTS)}")
        checkpoint = CHECKPOINTS[model_type]
    dest_dir = Path(dest_dir) if dest_dir else weights_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / checkpoint.filename
    if final.is_file() and checkpoint.problem(final) is None:
        return final
    base = base_url or from_environment("weights_url")
    url = base.rstrip("/") + "/" + checkpoint.filename if base else \
        (checkpoint.url or OFFICIAL_BASE_URL + checkpoint.filename)
    fd, tmp_name = tempfile.mkstemp(prefix=checkpoint.filename + ".", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        try:
            with requests.get(url, stream=True, timeout=timeout) as resp:
                resp.raise_for_status()
                total = int(resp.headers.get("content-length", 0)) or None
                with os.fdopen(fd, "wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, desc=checkpoint.filename
                ) as bar:
                    for block in resp.iter_content(chunk_size=1 << 20):
                        out.write(block)
                        bar.update(len(block))
        except requests.RequestException as exc:
            raise WeightsError(
                f"could not download {url}: {exc}. Without internet, copy the file to {final} "
                f"or pass --checkpoint PATH."
            ) from None
        problem = checkpoint.problem(tmp)
        if problem:
            raise WeightsError(f"downloaded {checkpoint.filename} {problem}; the file was discarded, try again")
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)
