"""A product's coverage record: what one product searched, under which sun and view, what it can
resolve, and how much of a catalogue it found there (issue 35).

One record type for every command that reports it: ``al-loop map`` (its ``--json`` summary,
``coverage`` per product) and ``al-loop candidates`` (the page's "Products searched" table). Each
value is ``None`` where it is not known, and :attr:`CoverageRecord.unknown` says why; nothing is
filled in by assumption.

* ``valid_area_m2``: the area searched, on an equal-area projection (``data.products.valid_area_m2``).
  In ``map`` the valid pixels under the kept tiles (its ``valid_<product>`` layer); in
  ``candidates`` the product's valid pixels (``area_source`` says which). Unknown without a CRS.
* ``incidence_deg``, ``emission_deg``, ``phase_deg``, ``solar_longitude_deg``: the PDS3 label's
  ``INCIDENCE_ANGLE``, ``EMISSION_ANGLE``, ``PHASE_ANGLE`` and ``SOLAR_LONGITUDE`` (a HiRISE RDR
  keeps them in ``VIEWING_PARAMETERS``; values at the image's centre), as the label gives them: a
  label without ``EMISSION_ANGLE`` leaves it unknown here, even though the depth measure then
  assumes a nadir view and says so in its own columns.
* ``map_scale_m``: the label's ``MAP_SCALE`` (``IMAGE_MAP_PROJECTION``), else the raster's pixel size
  in its CRS; unknown for a product without either.
* ``smallest_diameter_m``: the completeness limit ``export`` marks on the size-frequency plot,
  ``COMPLETE_PIXELS`` (10) pixels across at the map scale (:func:`al_loop.science.exports.completeness_m`):
  the smallest pit counted whole. The decoder outlines smaller objects (down to its minimum object
  size), but under 10 pixels their sizes and counts are not complete.
* ``catalogue_in_footprint``: the catalogue's entries inside the footprint (the area searched, in
  the product's CRS: :func:`al_loop.science.compare.inside_footprints`); ``catalogue_found``: those
  a pit on the product matched one to one under compare's rule; ``recall`` = found / in footprint
  (unknown when no entry lies inside). All three unknown without a catalogue or a footprint.
* ``pits``: the pits of the list the record goes with on this product: the pits ``map`` kept, the
  candidates ``candidates`` lists.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from al_loop.data.catalogue import CatalogueEntry
from al_loop.data.products import open_product, read_valid_mask
from al_loop.data.viewing import NO_VALUE
from al_loop.science.compare import (
    FOOTPRINT_OVERVIEW_SIDE,
    Footprint,
    RadiusRule,
    inside_footprints,
    mask_polygon,
    match_one_to_one,
)
from al_loop.science.exports import COMPLETE_PIXELS, completeness_m

# record field -> the label key it is read from
LABEL_KEYS = {"incidence_deg": "INCIDENCE_ANGLE", "emission_deg": "EMISSION_ANGLE", "phase_deg": "PHASE_ANGLE",
              "solar_longitude_deg": "SOLAR_LONGITUDE", "map_scale_m": "MAP_SCALE"}
SMALLEST_DIAMETER_RULE = f"{COMPLETE_PIXELS:g} pixels across at the map scale (the completeness limit)"
NO_CATALOGUE = "no catalogue given"
AREA_SEARCHED = "valid pixels under the kept tiles"
PRODUCT_VALID = "the product's valid pixels"


@dataclass(frozen=True)
class CoverageRecord:
    """What one product searched (module docstring); ``None`` where unknown, ``unknown`` says why
    (field name -> reason)."""

    product_id: str
    valid_area_m2: float | None
    area_source: str
    incidence_deg: float | None
    emission_deg: float | None
    phase_deg: float | None
    solar_longitude_deg: float | None
    map_scale_m: float | None
    smallest_diameter_m: float | None
    catalogue_in_footprint: int | None
    catalogue_found: int | None
    pits: int
    unknown: dict[str, str] = field(default_factory=dict)

    @property
    def recall(self) -> float | None:
        """Catalogue entries found / entries inside the footprint; None when that is not known or 0."""
        if not self.catalogue_in_footprint or self.catalogue_found is None:
            return None
        return self.catalogue_found / self.catalogue_in_footprint

    def why_unknown(self) -> dict[str, str]:
        """``unknown`` with recall's reason added where recall alone is unknown."""
        reasons = dict(self.unknown)
        if self.recall is None and "recall" not in reasons:
            reasons["recall"] = reasons.get("catalogue_in_footprint", "no catalogue entry inside the area searched")
        return reasons

    def summary(self) -> dict:
        """The record as JSON-ready values (None for null), with ``recall``, the smallest diameter's
        rule and ``unknown`` (every null field's reason)."""
        return {"product_id": self.product_id, "valid_area_m2": self.valid_area_m2, "area_source": self.area_source,
                "incidence_deg": self.incidence_deg, "emission_deg": self.emission_deg, "phase_deg": self.phase_deg,
                "solar_longitude_deg": self.solar_longitude_deg, "map_scale_m": self.map_scale_m,
                "smallest_diameter_m": self.smallest_diameter_m, "smallest_diameter_rule": SMALLEST_DIAMETER_RULE,
                "catalogue_in_footprint": self.catalogue_in_footprint, "catalogue_found": self.catalogue_found,
                "recall": self.recall, "pits": self.pits, "unknown": self.why_unknown()}


# ---- the label -------------------------------------------------------------------------------------------------


def label_numbers(source: str | Path, keys: Sequence[str]) -> tuple[dict[str, float | None], str]:
    """(key -> number, "") from a PDS3 label, each key looked up at the top level and one group or
    object down (``VIEWING_PARAMETERS``, ``IMAGE_MAP_PROJECTION``); None for a key absent, not a
    number or a PDS no-value marker. Every key None and the reason when ``source`` is not a
    readable ``.LBL``."""
    path = Path(source)
    if path.suffix.upper() != ".LBL":
        return dict.fromkeys(keys), f"not a PDS3 label ({path.suffix or 'no extension'}): no viewing geometry"
    import pvl

    try:
        label = pvl.load(str(path))
    except (OSError, ValueError, pvl.exceptions.LexerError) as exc:
        return dict.fromkeys(keys), f"its label {path.name} cannot be read ({exc})"
    scopes = [label, *(v for _, v in label.items() if hasattr(v, "get"))]
    return {key: next((n for s in scopes if (n := _number(s.get(key))) is not None), None) for key in keys}, ""


def _number(value) -> float | None:
    value = getattr(value, "value", value)  # pvl's Quantity: 49.99 <DEG>
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return None if not math.isfinite(number) or number in NO_VALUE else number


def _label_part(source: str | Path, pixel_m: float | None) -> tuple[dict, dict[str, str]]:
    """The record's angles and map scale (and the smallest diameter from it), with their reasons."""
    numbers, why = label_numbers(source, list(LABEL_KEYS.values()))
    values = {name: numbers[key] for name, key in LABEL_KEYS.items()}
    unknown = {name: why or f"the label has no {key}" for name, key in LABEL_KEYS.items() if values[name] is None}
    if values["map_scale_m"] is None and pixel_m is not None and math.isfinite(pixel_m) and pixel_m > 0:
        values["map_scale_m"] = float(pixel_m)
        unknown.pop("map_scale_m")
    elif values["map_scale_m"] is None:
        unknown["map_scale_m"] = f"{unknown['map_scale_m']}, and the raster has no CRS"
    scale = values["map_scale_m"]
    values["smallest_diameter_m"] = completeness_m(scale) if scale is not None else None
    if scale is None:
        unknown["smallest_diameter_m"] = "no map scale"
    return values, unknown


# ---- the catalogue ---------------------------------------------------------------------------------------------


def catalogue_counts(footprint: Footprint | None, entries: Sequence[CatalogueEntry] | None,
                     found: np.ndarray | None) -> tuple[int | None, int | None, str]:
    """(entries inside the footprint, of them those ``found`` (M,) bool marks, reason when unknown)."""
    if entries is None:
        return None, None, NO_CATALOGUE
    if footprint is None:
        return None, None, "no footprint on Mars (no CRS, or no valid pixels)"
    lat = np.array([e.lat for e in entries], float)
    lon = np.array([e.lon_e for e in entries], float)
    inside = np.array([h is not None for h in inside_footprints([footprint], lat, lon)], bool) if len(entries) \
        else np.zeros(0, bool)
    hits = np.zeros(len(entries), bool) if found is None else np.asarray(found, bool)
    return int(inside.sum()), int((inside & hits).sum()), ""


# ---- the record ------------------------------------------------------------------------------------------------


def coverage_record(product_id: str, source: str | Path, pixel_m: float | None, valid_area_m2: float | None,
                    footprint: Footprint | None, entries: Sequence[CatalogueEntry] | None, found: np.ndarray | None,
                    pits: int, area_source: str = AREA_SEARCHED) -> CoverageRecord:
    """The record of a product read from ``source`` (its label, for the angles): ``pixel_m`` its
    raster's pixel size in metres (None without a CRS), ``valid_area_m2`` the area searched (None or
    NaN: unknown), ``footprint`` where it searched, ``entries`` the catalogue (None: none given) and
    ``found`` (M,) bool the entries a pit on it matched."""
    values, unknown = _label_part(source, pixel_m)
    area = valid_area_m2 if valid_area_m2 is not None and math.isfinite(valid_area_m2) else None
    if area is None:
        unknown["valid_area_m2"] = "no CRS: its pixels have no size on the ground"
    inside, hit, why = catalogue_counts(footprint, entries, found)
    if why:
        unknown |= {"catalogue_in_footprint": why, "catalogue_found": why}
    return CoverageRecord(product_id=product_id, valid_area_m2=area, area_source=area_source,
                          catalogue_in_footprint=inside, catalogue_found=hit, pits=int(pits), unknown=unknown, **values)


def product_coverage(path: str | Path, entries: Sequence[CatalogueEntry] | None, found: np.ndarray | None,
                     pits: int) -> CoverageRecord:
    """The record of a product file as a whole: its valid pixels (a decimated read of at most
    ``FOOTPRINT_OVERVIEW_SIDE`` a side, as compare's footprints) are the area and the footprint."""
    product = open_product(path)
    footprint, area = None, None
    if product.crs_wkt:
        mask = read_valid_mask(product, FOOTPRINT_OVERVIEW_SIDE)
        area = mask.area_m2
        if mask.valid.any():
            footprint = Footprint(product.product_id, product.crs_wkt, mask_polygon(mask.valid, mask.transform), str(path))
    return coverage_record(product.product_id, path, product.pixel_size if product.crs_wkt else None, area, footprint,
                           entries, found, pits, PRODUCT_VALID)


def entries_found(lon_e: np.ndarray, lat: np.ndarray, diameter_m: np.ndarray, entries: Sequence[CatalogueEntry],
                  rule: RadiusRule | None = None) -> np.ndarray:
    """(M,) bool: the catalogue entries some pit matches one to one under compare's ``rule``; pits
    given by (N,) east longitude, latitude and diameter (NaN: unknown, the rule's floor applies);
    ``rule`` None: compare's default (its size rule)."""
    cat = np.array([(e.lon_e, e.lat) for e in entries], float).reshape(-1, 2)
    pits = np.column_stack([np.asarray(lon_e, float), np.asarray(lat, float)]).reshape(-1, 2)
    keep = np.isfinite(pits).all(axis=1)
    return match_one_to_one(pits[keep], np.asarray(diameter_m, float)[keep], cat, rule or RadiusRule(),
                            np.array([e.rounding_m for e in entries], float)).matched_entries
