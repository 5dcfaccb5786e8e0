"""What a Label Studio labelling config says: which image, which controls, which labels.

The backend and the loop never hard-code ``from_name``/``to_name``/labels: they read
them from the config Label Studio sends (``/setup``'s ``schema``, ``/predict``'s
``label_config``) or from ``label_config/skylights.xml``.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from al_loop.errors import InstallError, SchemaError

CONFIG_NAME = "skylights.xml"
# In a checkout (and an editable install) the config sits beside the package; a wheel
# installs it as data under <prefix>/share/al-loop/label_config (pyproject's data-files).
SEARCH_PATH = (
    Path(__file__).resolve().parents[2] / "label_config",
    Path(sys.prefix) / "share" / "al-loop" / "label_config",
)

BRUSH, RECTANGLE, KEYPOINT = "brushlabels", "rectanglelabels", "keypointlabels"
_CONTROL_TAGS = {"brushlabels": BRUSH, "rectanglelabels": RECTANGLE, "keypointlabels": KEYPOINT}


@dataclass(frozen=True)
class Control:
    name: str  # from_name in results
    to_name: str  # the Image tag's name
    kind: str  # BRUSH, RECTANGLE or KEYPOINT (the result ``type``)
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelSchema:
    image_name: str  # the Image tag's name (to_name)
    image_key: str  # the task data key that holds the image URL ($image -> "image")
    controls: tuple[Control, ...]

    def of_kind(self, kind: str) -> list[Control]:
        return [c for c in self.controls if c.kind == kind]

    @property
    def mask_control(self) -> Control:
        """The brush control masks are written to (the first one on the image)."""
        return self.of_kind(BRUSH)[0]

    def brush_for(self, label: str) -> Control:
        """The brush control that holds ``label``: a prompt's label must exist as a mask label."""
        for control in self.of_kind(BRUSH):
            if label in control.labels:
                return control
        known = sorted({lab for c in self.of_kind(BRUSH) for lab in c.labels})
        raise SchemaError(f"label {label!r} is not a brush label of this project (it has: {', '.join(known)})")


def parse_label_config(xml: str) -> LabelSchema:
    """Read the image and the brush/rectangle/keypoint controls of a labelling config."""
    if not isinstance(xml, str):
        raise SchemaError(f"the labelling config must be XML text, not {type(xml).__name__}")
    if not xml.strip():
        raise SchemaError("the labelling config is empty")
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        # Entity expansion is how XML bombs work; no Label Studio config declares a DTD.
        raise SchemaError("the labelling config declares a DTD or entities, which Label Studio configs never do")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SchemaError(f"the labelling config is not valid XML: {exc}") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    if not images:
        raise SchemaError("the labelling config has no <Image> tag")
    controls = []
    for el in root.iter():
        kind = _CONTROL_TAGS.get(el.tag.lower())
        if kind is None:
            continue
        name, to_name = el.get("name"), el.get("toName")
        if not name or to_name not in images:
            continue
        labels = tuple(lab.get("value") for lab in el.iter() if lab.tag == "Label" and lab.get("value"))
        controls.append(Control(name, to_name, kind, labels))
    brushes = [c for c in controls if c.kind == BRUSH]
    if not brushes:
        raise SchemaError("the labelling config has no <BrushLabels> on an image: masks have nowhere to go")
    unlabelled = [c.name for c in brushes if not c.labels]
    if unlabelled:
        raise SchemaError(f"<BrushLabels name={unlabelled[0]!r}> has no <Label value=...>: a mask needs a label to carry")
    image_name = brushes[0].to_name
    value = images[image_name]
    if not value.startswith("$") or len(value) < 2:
        raise SchemaError(f"<Image name={image_name!r}> has value {value!r}; expected a task field such as '$image'")
    controls = [c for c in controls if c.to_name == image_name]
    return LabelSchema(image_name=image_name, image_key=value[1:], controls=tuple(controls))


def default_label_config() -> str:
    """The product's config, ``label_config/skylights.xml``."""
    for folder in SEARCH_PATH:
        if (folder / CONFIG_NAME).is_file():
            return (folder / CONFIG_NAME).read_text()
    raise InstallError(f"{CONFIG_NAME} not found in {', '.join(map(str, SEARCH_PATH))}; reinstall al-loop")
