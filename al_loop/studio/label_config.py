"""What a Label Studio labelling config says: which image, which controls, which labels.

The backend and the loop never hard-code ``from_name``/``to_name``/labels: they read
them from the config Label Studio sends (``/setup``'s ``schema``, ``/predict``'s
``label_config``) or from ``label_config/skylights.xml``.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from al_loop.errors import InstallError, SchemaError

CONFIG_NAME = "skylights.xml"  # one label, "pit": the binary project
TYPED_CONFIG_NAME = "pit-types.xml"  # the five types of the HiRISE pits set
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

    @property
    def type_names(self) -> tuple[str, ...]:
        """The pit types, in order: the mask control's labels (one, "pit", in a binary project).
        Type k (1..K) of a decoder and of a YOLO class k-1 is the k-th of them."""
        return self.mask_control.labels

    def type_of(self, label: str) -> int:
        """The type number (1..K) of a region's label, whatever control it came from."""
        if label not in self.type_names:
            raise SchemaError(f"label {label!r} is not one of the pit types {', '.join(self.type_names)}")
        return self.type_names.index(label) + 1

    def brush_for(self, label: str) -> Control:
        """The brush control that holds ``label``: a prompt's label must exist as a mask label."""
        for control in self.of_kind(BRUSH):
            if label in control.labels:
                return control
        known = sorted({lab for c in self.of_kind(BRUSH) for lab in c.labels})
        raise SchemaError(f"label {label!r} is not a brush label of this project (it has: {', '.join(known)})")


def parse_label_config(xml: str) -> LabelSchema:
    """Read the image and the brush/rectangle/keypoint controls of a labelling config; a config
    this product cannot work with is a SchemaError saying what is missing."""
    root = _xml_root(xml)
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    if not images:
        raise SchemaError("the labelling config has no <Image> tag")
    controls = _controls(root, images)
    image_name = _mask_brush(controls).to_name
    value = images[image_name]
    if not value.startswith("$") or len(value) < 2:
        raise SchemaError(f"<Image name={image_name!r}> has value {value!r}; expected a task field such as '$image'")
    return LabelSchema(image_name=image_name, image_key=value[1:],
                       controls=tuple(c for c in controls if c.to_name == image_name))


def _xml_root(xml: str) -> ET.Element:
    """The parsed config, refused before parsing when it is not text or declares entities."""
    if not isinstance(xml, str):
        raise SchemaError(f"the labelling config must be XML text, not {type(xml).__name__}")
    if not xml.strip():
        raise SchemaError("the labelling config is empty")
    if "<!DOCTYPE" in xml.upper() or "<!ENTITY" in xml.upper():
        # Entity expansion is how XML bombs work; no Label Studio config declares a DTD.
        raise SchemaError("the labelling config declares a DTD or entities, which Label Studio configs never do")
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise SchemaError(f"the labelling config is not valid XML: {exc}") from None


def _controls(root: ET.Element, images: dict[str, str]) -> list[Control]:
    """The brush, rectangle and keypoint controls on one of the config's images, in order."""
    controls = []
    for el in root.iter():
        kind = _CONTROL_TAGS.get(el.tag.lower())
        name, to_name = el.get("name"), el.get("toName")
        if kind is None or not name or to_name not in images:
            continue
        labels = tuple(lab.get("value") for lab in el.iter() if lab.tag == "Label" and lab.get("value"))
        controls.append(Control(name, to_name, kind, labels))
    return controls


def _mask_brush(controls: list[Control]) -> Control:
    """The first brush control (where masks go); every brush must carry labels."""
    brushes = [c for c in controls if c.kind == BRUSH]
    if not brushes:
        raise SchemaError("the labelling config has no <BrushLabels> on an image: masks have nowhere to go")
    unlabelled = [c.name for c in brushes if not c.labels]
    if unlabelled:
        raise SchemaError(f"<BrushLabels name={unlabelled[0]!r}> has no <Label value=...>: a mask needs a label to carry")
    return brushes[0]


BUILT_IN = {"skylights": "skylights.xml", "pit-types": "pit-types.xml"}  # --label-config NAME


def label_config_text(spec: str | Path) -> str:
    """``--label-config``'s XML: a file, or a built-in config by name (:data:`BUILT_IN`), so the
    product's configs work from any folder, not only from the checkout."""
    path = Path(spec)
    if not path.is_file() and str(spec) in BUILT_IN:
        return default_label_config(BUILT_IN[str(spec)])
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"label config {spec}: {exc} (a file, or a built-in name: {', '.join(BUILT_IN)})") from None


def default_label_config(name: str = CONFIG_NAME) -> str:
    """A config the product ships: ``label_config/skylights.xml`` (binary) by default."""
    for folder in SEARCH_PATH:
        if (folder / name).is_file():
            return (folder / name).read_text()
    raise InstallError(f"{name} not found in {', '.join(map(str, SEARCH_PATH))}; reinstall al-loop")


# Distinct under the brush's transparency and on grey HiRISE tiles; repeats after ten types.
PALETTE = ("#ff6a00", "#00a0ff", "#2ec27e", "#e01b24", "#c061cb", "#f6d32d", "#1a5fb4", "#865e3c", "#26a269", "#ffbe6f")


def typed_label_config(names: Sequence[str], hints: Sequence[str] | None = None) -> str:
    """A labelling config with one label per pit type on the brush, box and point controls
    (the same names: a typed box gives a mask of its type), each with a hint the expert
    sees on hovering over it."""
    names = [str(n).strip() for n in names]
    if not names or not all(names) or len(set(names)) != len(names):
        raise SchemaError(f"pit type names must be distinct and not empty, got {names}")
    hints = list(hints) if hints else [""] * len(names)
    if len(hints) != len(names):
        raise SchemaError(f"{len(hints)} descriptions for {len(names)} pit types")
    view = ET.Element("View")
    ET.SubElement(view, "Header", value=(
        "Outline every pit, skylight or possible lava-tube entrance and choose its type first (hover over a type for "
        "its description). Smart box or smart point asks SAM for a mask of that type; submit with no regions when "
        "the tile holds none."))
    ET.SubElement(view, "Image", name="image", value="$image", zoom="true", zoomControl="true",
                  brightnessControl="true", contrastControl="true", rotateControl="false")
    # A caption over each row of type buttons: the three rows carry the same names, and the
    # expert has to see which row paints, which boxes and which points.
    for tag, name, caption, extra in (
        ("BrushLabels", "mask", "Brush: paint or correct a mask of this type", {}),
        ("RectangleLabels", "box", "Smart box: SAM outlines the pit inside it", {"smart": "true", "strokeWidth": "2"}),
        ("KeyPointLabels", "point", "Smart point: SAM outlines the pit under it (Alt-click: not a pit)",
         {"smart": "true", "strokeWidth": "2"}),
    ):
        ET.SubElement(view, "Header", value=caption, size="6")
        control = ET.SubElement(view, tag, name=name, toName="image", **extra)
        for i, (label, hint) in enumerate(zip(names, hints, strict=False)):
            attributes = {"value": label, "background": PALETTE[i % len(PALETTE)]}
            if hint:
                attributes["hint"] = hint
            ET.SubElement(control, "Label", **attributes)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"
