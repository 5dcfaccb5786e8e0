"""Every official checkpoint al-loop can use: where it comes from, its hash, where it is kept.

:data:`CHECKPOINTS` is the one table (SAM ViT-B/L/H, MobileSAM ViT-T, SAM 2.1 Hiera T/S/B+/L):
source URL, sha256 and where that hash is published, size in bytes where published. A
download is checked against it before the file takes its final name, and ``al-loop weights
prepare`` checks the file again before measuring engines on it. SAM's own file names carry the
first six hex digits of the file's md5 (``sam_vit_b_01ec64.pth``); that check is kept too.

| model | file | sha256 published by | size (bytes) |
|---|---|---|---|
| vit_b, vit_l, vit_h | Meta's ``sam_vit_*.pth`` | micro-sam's model registry | not published |
| vit_t | MobileSAM's ``mobile_sam.pt`` | micro-sam's model registry | not published |
| sam2.1-hiera_t/_s/_b+/_l | Meta's ``sam2.1_hiera_*.pt`` (092824) | micro-sam's SAM 2.1 registry | not published |

Where a table entry has no published hash (a checkpoint a caller builds), the download computes
the sha256, prints it and records it beside the file (``<file>.sha256``).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from al_loop.errors import WeightsError
from al_loop.settings import from_environment, local_path

OFFICIAL_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
# Where the hashes below are published: micro-sam (computational-cell-analytics/micro-sam), whose
# downloader (pooch) checks each of these files against them.
MICRO_SAM = "micro-sam, micro_sam/util.py (commit 00006fc6a86d4f6888f7ef333cf070987ffabb51)"
MICRO_SAM2 = "micro-sam, micro_sam/v2/util.py HASHES['sam2.1'] (commit 4f6cca85a2e9ca9e25ec4df0eab4e239f9a48fcc)"
NOT_PUBLISHED = "not published"


@dataclass(frozen=True)
class Checkpoint:
    model_type: str
    filename: str
    md5_prefix: str  # SAM's files name their md5's first digits; "" for other files
    size_mb: int  # what a person is told a download costs
    url: str | None = None  # None: OFFICIAL_BASE_URL + filename
    sha256: str | None = None  # None: no hash published for it
    size_bytes: int | None = None  # None: no size published for it
    release: str = ""  # what names the weights in cache ids when the file name carries no md5 (SAM 2.1)
    published_by: str = NOT_PUBLISHED  # where the sha256 is published

    @property
    def tag(self) -> str:
        """What names these weights in cache ids (unchanged since they were first cached)."""
        return self.md5_prefix or self.release or (self.sha256 or "")[:6]

    @property
    def source(self) -> str:
        return self.url or OFFICIAL_BASE_URL + self.filename

    def problem(self, path: Path) -> str | None:
        """Why the file at ``path`` is not this checkpoint (None: it is): its size, md5 prefix and
        sha256 where the table knows them."""
        size = path.stat().st_size
        if self.size_bytes is not None and size != self.size_bytes:
            return f"is {size} bytes, expected {self.size_bytes}"
        md5, sha256 = _digests(path)
        if self.md5_prefix and not md5.startswith(self.md5_prefix):
            return f"has md5 {md5[:12]}..., expected a prefix of {self.md5_prefix}"
        if self.sha256 and sha256 != self.sha256:
            return f"has sha256 {sha256[:12]}..., expected {self.sha256[:12]}... (published by {self.published_by})"
        return None


CHECKPOINTS: dict[str, Checkpoint] = {
    "vit_b": Checkpoint("vit_b", "sam_vit_b_01ec64.pth", "01ec64", 375, published_by=MICRO_SAM,
                        sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": Checkpoint("vit_l", "sam_vit_l_0b3195.pth", "0b3195", 1250, published_by=MICRO_SAM,
                        sha256="3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": Checkpoint("vit_h", "sam_vit_h_4b8939.pth", "4b8939", 2560, published_by=MICRO_SAM,
                        sha256="a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    # MobileSAM (Apache-2.0): the file in its authors' repository; micro-sam registers the same hash
    # for its copy of it.
    "vit_t": Checkpoint("vit_t", "mobile_sam.pt", "", 41, published_by=MICRO_SAM,
                        url="https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                        sha256="6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"),
}
# SAM 2.1 (Apache-2.0), Meta's release of 2024-09-28 (092824, the tag its cache ids carry). Meta
# publishes no hash; micro-sam pins these very URLs with the hashes below.
for _name, _file, _mb, _sha in (
        ("sam2.1-hiera_t", "sam2.1_hiera_tiny.pt", 149, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
        ("sam2.1-hiera_s", "sam2.1_hiera_small.pt", 176, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
        ("sam2.1-hiera_b+", "sam2.1_hiera_base_plus.pt", 309,
         "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
        ("sam2.1-hiera_l", "sam2.1_hiera_large.pt", 857, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318")):
    CHECKPOINTS[_name] = Checkpoint(_name, _file, "", _mb, url=SAM2_BASE_URL + _file, sha256=_sha, release="092824",
                                    published_by=MICRO_SAM2)


def table_markdown() -> str:
    """The checkpoint table as Markdown (model, file, source, size, sha256 and who publishes it)."""
    rows = ["| model | file | source | size (bytes) | sha256 | sha256 published by |", "|---|---|---|---|---|---|"]
    rows += [f"| {c.model_type} | `{c.filename}` | {c.source} | {c.size_bytes or NOT_PUBLISHED} | "
             f"`{c.sha256 or NOT_PUBLISHED}` | {c.published_by} |" for c in CHECKPOINTS.values()]
    return "\n".join(rows)


def weights_dir() -> Path:
    """Where checkpoints live: ``$AL_LOOP_WEIGHTS_DIR`` or ``~/.cache/al-loop/weights``."""
    return local_path("weights_dir")


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    return _digests(path, chunk)[0]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    return _digests(path, chunk)[1]


def _digests(path: Path, chunk: int = 1 << 20) -> tuple[str, str]:
    """(md5, sha256) of the file, in one pass over it."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def verify(model_type: str, checkpoint: str | Path | None = None) -> Path | None:
    """Check the official file of ``model_type`` in the weights folder (or ``checkpoint``, when it
    bears the official file's name) against the table; a WeightsError names the file and what is
    wrong. Returns the file checked (None: a file of another name, or ``tiny``, which the table
    cannot vouch for)."""
    official = CHECKPOINTS.get(model_type)
    if official is None:
        return None
    path = resolve_checkpoint(model_type, checkpoint)
    if path.name != official.filename:
        return None
    problem = official.problem(path)
    if problem:
        raise WeightsError(f"{path} {problem}: it is not the official {model_type} checkpoint (damaged or "
                           f"replaced); delete it and download it again (`al-loop weights download {model_type}`)")
    return path


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
            f"or set the checkpoint ($AL_LOOP_CHECKPOINT) to a file you already have; without weights, the "
            f"filterbank encoder learns and boxes become the ellipse inscribed in them."
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


def _record_sha256(tmp: Path, final: Path, recorded: Path) -> None:
    """For a file no hash is published for: say the sha256 it arrived with, and keep it beside it."""
    digest = sha256_of(tmp)
    recorded.write_text(f"{digest}  {final.name}\n")
    print(f"{final.name}: no published sha256 to check it against; it arrived with sha256 {digest} "
          f"(recorded in {final.name}.sha256)", file=sys.stderr)


def download(
    model_type: str,
    dest_dir: str | Path | None = None,
    base_url: str | None = None,
    checkpoint: Checkpoint | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch an official checkpoint into ``dest_dir`` and verify it against the table (size, md5
    prefix and sha256 where known).

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
    recorded = final.with_name(final.name + ".sha256")
    recorded.unlink(missing_ok=True)  # the record of a file no longer there (or about to be replaced)
    base = base_url or from_environment("weights_url")
    url = base.rstrip("/") + "/" + checkpoint.filename if base else checkpoint.source
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
                f"could not download {url}: {exc}. Without internet, copy the file to {final}, "
                f"or set the checkpoint ($AL_LOOP_CHECKPOINT) to a copy of it elsewhere."
            ) from None
        problem = checkpoint.problem(tmp)
        if problem:
            raise WeightsError(f"{url}: the downloaded {checkpoint.filename} {problem}; the file was discarded, "
                               "nothing was kept: try again, or fetch it from another mirror")
        if not checkpoint.sha256:
            _record_sha256(tmp, final, recorded)
        os.replace(tmp, final)
        return final
    finally:
        tmp.unlink(missing_ok=True)
