"""Writing products the way HiRISE (and a GIS) writes them: for tests, benchmarks and the demo.

``write_hirise_rdr`` writes a lossless JPEG2000 and a detached PDS3 label shaped like a
HiRISE RDR's (COMPRESSED_FILE naming the JP2, UNCOMPRESSED_FILE/IMAGE with size, null and
scaling, IMAGE_MAP_PROJECTION equirectangular on the Mars sphere), which GDAL's PDS driver
opens as a georeferenced product. ``write_geotiff`` writes the same pixels as a GeoTIFF in
a Mars equirectangular CRS.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

MARS_RADIUS_M = 3396190.0

# A HiRISE RDR label, trimmed to what GDAL and the loop read (and what a reader expects to see).
LABEL_TEMPLATE = """PDS_VERSION_ID = PDS3
DATA_SET_ID = "MRO-M-HIRISE-5-RDR-V1.1"
PRODUCT_ID = "{product_id}"
INSTRUMENT_ID = "HIRISE"
TARGET_NAME = MARS
OBJECT = COMPRESSED_FILE
  FILE_NAME = "{jp2}"
  RECORD_TYPE = UNDEFINED
  ENCODING_TYPE = "JP2"
  ENCODING_TYPE_VERSION_NAME = "ISO/IEC15444-1:2004"
  INTERCHANGE_FORMAT = BINARY
  UNCOMPRESSED_FILE_NAME = "{stem}.IMG"
END_OBJECT = COMPRESSED_FILE
OBJECT = UNCOMPRESSED_FILE
  FILE_NAME = "{stem}.IMG"
  RECORD_TYPE = FIXED_LENGTH
  RECORD_BYTES = {record_bytes}
  FILE_RECORDS = {lines}
  ^IMAGE = "{stem}.IMG"
  OBJECT = IMAGE
    LINES = {lines}
    LINE_SAMPLES = {samples}
    BANDS = 1
    SAMPLE_TYPE = MSB_UNSIGNED_INTEGER
    SAMPLE_BITS = 16
    SAMPLE_BIT_MASK = 2#0000001111111111#
    SCALING_FACTOR = 1.0e-4
    OFFSET = 0.0
    BAND_STORAGE_TYPE = BAND_SEQUENTIAL
    CORE_NULL = {null}
    CORE_LOW_REPR_SATURATION = 1
    CORE_HIGH_REPR_SATURATION = 1023
  END_OBJECT = IMAGE
END_OBJECT = UNCOMPRESSED_FILE
OBJECT = IMAGE_MAP_PROJECTION
  ^DATA_SET_MAP_PROJECTION = "DSMAP.CAT"
  MAP_PROJECTION_TYPE = "EQUIRECTANGULAR"
  PROJECTION_LATITUDE_TYPE = PLANETOCENTRIC
  A_AXIS_RADIUS = {radius_km} <KM>
  B_AXIS_RADIUS = {radius_km} <KM>
  C_AXIS_RADIUS = {radius_km} <KM>
  COORDINATE_SYSTEM_NAME = PLANETOCENTRIC
  POSITIVE_LONGITUDE_DIRECTION = EAST
  CENTER_LATITUDE = {lat} <DEG>
  CENTER_LONGITUDE = {lon} <DEG>
  LINE_FIRST_PIXEL = 1
  LINE_LAST_PIXEL = {lines}
  SAMPLE_FIRST_PIXEL = 1
  SAMPLE_LAST_PIXEL = {samples}
  MAP_PROJECTION_ROTATION = 0.0 <DEG>
  MAP_RESOLUTION = {resolution:.4f} <PIX/DEG>
  MAP_SCALE = {scale} <METERS/PIXEL>
  LINE_PROJECTION_OFFSET = {line_offset} <PIXEL>
  SAMPLE_PROJECTION_OFFSET = {sample_offset} <PIXEL>
END_OBJECT = IMAGE_MAP_PROJECTION
{viewing}END
"""
# VIEWING_PARAMETERS keys a HiRISE RDR label writes, by the names write_hirise_rdr takes them.
VIEWING_KEYS = {"incidence": "INCIDENCE_ANGLE", "emission": "EMISSION_ANGLE", "phase": "PHASE_ANGLE",
                "sun_azimuth": "SUB_SOLAR_AZIMUTH", "spacecraft_azimuth": "SUB_SPACECRAFT_AZIMUTH",
                "north_azimuth": "NORTH_AZIMUTH"}

# The sample's sun and view are a real observation's: ESP_013951_1955_RED (northeast Syrtis Major,
# 2009-07-18, 14.37 h local time), its RDR label's VIEWING_PARAMETERS as kept in GDAL's test data
# (OSGeo/gdal, autotest/gdrivers/data/pds/ESP_013951_1955_RED.LBL). An RDR label has no
# SUB_SPACECRAFT_AZIMUTH; its phase angle puts the spacecraft 39.3 degrees of azimuth from the sun,
# on one side or the other of the sun line. We write the side a cross-track roll gives (MRO's
# ground track runs nearly north-south, so HiRISE looks off-nadir east or west): the spacecraft at
# compass 264.8 (west), the other side being compass 186.2, nearly due south, which would need the
# camera to look along the track. That one value is derived here, not read from the label.
ESP_013951_1955_VIEWING = {"incidence": 49.990076, "emission": 8.476113, "phase": 43.677223,
                           "sun_azimuth": 135.482409, "north_azimuth": 270.0}


def sun_view_azimuth(incidence: float, emission: float, phase: float) -> float:
    """|azimuth from the sun to the spacecraft| (degrees) the phase angle allows:
    cos g = cos i cos e + sin i sin e cos(dphi)."""
    i, e, g = (math.radians(v) for v in (incidence, emission, phase))
    return math.degrees(math.acos(max(-1.0, min(1.0, (math.cos(g) - math.cos(i) * math.cos(e)) /
                                                     (math.sin(i) * math.sin(e))))))


SAMPLE_VIEWING = {**ESP_013951_1955_VIEWING, "spacecraft_azimuth": round(
    ESP_013951_1955_VIEWING["sun_azimuth"] + sun_view_azimuth(49.990076, 8.476113, 43.677223), 3)}


def viewing_group(viewing: dict) -> str:
    """The label's ``GROUP = VIEWING_PARAMETERS`` with the angles given (names as VIEWING_KEYS';
    north up when no north_azimuth is given); a key left out is left out of the label."""
    values = {"north_azimuth": 270.0, **viewing}
    unknown = set(values) - set(VIEWING_KEYS)
    if unknown:
        raise ValueError(f"unknown viewing keys {sorted(unknown)}: use {sorted(VIEWING_KEYS)}")
    lines = [f"  {VIEWING_KEYS[k]} = {values[k]} <DEG>" for k in VIEWING_KEYS if k in values and values[k] is not None]
    return "GROUP = VIEWING_PARAMETERS\n" + "\n".join(lines) + "\nEND_GROUP = VIEWING_PARAMETERS\n"


def equirectangular_wkt(center_lat: float, center_lon: float, radius: float = MARS_RADIUS_M) -> str:
    """Mars equirectangular (true scale at ``center_lat``), as HiRISE RDRs are projected."""
    from pyproj import CRS

    return CRS.from_proj4(
        f"+proj=eqc +lat_ts={center_lat} +lat_0=0 +lon_0={center_lon} +x_0=0 +y_0=0 +R={radius} +units=m +no_defs"
    ).to_wkt()


def corner_for(center_lat: float, width: int, height: int, scale: float, radius: float = MARS_RADIUS_M) -> tuple[float, float]:
    """Projected (x, y) of the top-left corner that puts the product's centre at ``center_lat``
    (and at the central meridian)."""
    y_centre = math.radians(center_lat) * radius
    return -width * scale / 2, y_centre + height * scale / 2


def write_geotiff(pixels: np.ndarray, path: Path, crs_wkt: str | None, corner: tuple[float, float], scale: float,
                  nodata: float | None = 0) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = pixels.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype=pixels.dtype.name,
                       crs=crs_wkt, transform=from_origin(corner[0], corner[1], scale, scale), nodata=nodata,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(pixels, 1)
    return path


def write_hirise_rdr(pixels: np.ndarray, folder: Path, product_id: str, center_lat: float, center_lon: float,
                     scale: float = 0.25, null: int = 0, label_size: tuple[int, int] | None = None,
                     viewing: dict | None = None) -> Path:
    """``<product_id>.JP2`` (lossless, 10 bits in 16) and ``<product_id>.LBL``; returns the label.
    ``label_size`` = (lines, samples) writes a label that disagrees with the image (for tests);
    ``viewing`` (incidence, emission, phase, sun_azimuth, spacecraft_azimuth, north_azimuth in
    degrees; :func:`viewing_group`) adds the VIEWING_PARAMETERS group a HiRISE RDR label carries."""
    import rasterio
    import rasterio.errors
    import rasterio.shutil

    folder.mkdir(parents=True, exist_ok=True)
    height, width = pixels.shape
    jp2 = folder / f"{product_id}.JP2"
    with warnings.catch_warnings():
        # the JP2 itself carries no georeferencing, as HiRISE's: the label does
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        staging = folder / f".{product_id}.staging.tif"
        with rasterio.open(staging, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint16") as dst:
            dst.write(pixels.astype(np.uint16), 1)
        # One JPEG2000 tile for the whole image, as HiRISE writes them (what makes random
        # windows slow); rasterio.open(..., "w") would ignore a block size this large.
        rasterio.shutil.copy(staging, jp2, driver="JP2OpenJPEG", BLOCKXSIZE=width, BLOCKYSIZE=height,
                             QUALITY=100, REVERSIBLE="YES", NBITS=10)
        staging.unlink()
    x0, y0 = corner_for(center_lat, width, height, scale)
    lines, samples = label_size or (height, width)
    label = folder / f"{product_id}.LBL"
    label.write_text(_label_text(product_id, jp2.name, lines, samples, null, center_lat, center_lon, scale, x0, y0,
                                 viewing_group(viewing) if viewing else ""))
    return label


def _label_text(product_id: str, jp2: str, lines: int, samples: int, null: int, lat: float, lon: float,
                scale: float, x0: float, y0: float, viewing: str = "") -> str:
    # GDAL's PDS driver puts the top-left corner at ((-SAMPLE_PROJECTION_OFFSET - 0.5) * scale,
    # (LINE_PROJECTION_OFFSET + 0.5) * scale); the offsets below invert that.
    return LABEL_TEMPLATE.format(
        product_id=product_id, jp2=jp2, stem=Path(jp2).stem, record_bytes=samples * 2, lines=lines, samples=samples,
        null=null, radius_km=MARS_RADIUS_M / 1000, lat=lat, lon=lon, resolution=math.radians(1.0) * MARS_RADIUS_M / scale,
        scale=scale, line_offset=y0 / scale - 0.5, sample_offset=-x0 / scale - 0.5, viewing=viewing,
    )


def mosaic(tiles: list[np.ndarray], columns: int, null_corner: bool = True) -> np.ndarray:
    """Grey 8-bit tiles side by side as a 10-bit product (DN = 4 * grey + 1, 0 = null); with
    ``null_corner`` the top-left triangle is null, as the edge of a map-projected swath is."""
    rows = math.ceil(len(tiles) / columns)
    side = tiles[0].shape[0]
    out = np.zeros((rows * side, columns * side), dtype=np.uint16)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile.astype(np.uint16) * 4 + 1
    if null_corner:
        yy, xx = np.mgrid[0 : out.shape[0], 0 : out.shape[1]]
        out[yy + xx < side] = 0
    return out


SAMPLE_ID = "SAMPLE_000100_1710_RED"
# Planetocentric lat, east lon of a real cave candidate: MGC3's CC0203 ("Arsia southern rim"), so that
# `compare` against the catalogue has an entry inside the sample's footprint.
SAMPLE_CENTRE = (-10.21545, 239.3931)


def write_sample_product(folder: Path, seed: int = 0, columns: int = 3, rows: int = 2, side: int = 512) -> dict[str, Path]:
    """A small HiRISE-style product of generated terrain with pits (JP2 + PDS3 label, 0.25 m/px,
    a null corner like a swath's edge, the sun and view of ESP_013951_1955_RED: SAMPLE_VIEWING), the expert's boxes of its pits (GeoJSON in Mars lon/lat),
    and a YOLO set of other generated tiles to train a decoder on: the map path end to end,
    with nothing to download. Returns the paths by role."""
    from al_loop.data.mars import lonlat_wkt, reproject
    from al_loop.data.synthetic import generate_tile, write_yolo_dataset
    from al_loop.data.vectors import write_geojson

    # The pits are shaded by the label's sun (SUB_SOLAR_AZIMUTH points to the sun; the light travels
    # the other way), so measure finds their shadows where the geometry says.
    light = math.radians(SAMPLE_VIEWING["sun_azimuth"]) + math.pi
    tiles = [generate_tile(seed * 7919 + 50_000 + i, side, light_azimuth=light) for i in range(columns * rows)]
    pixels = mosaic([t.image for t in tiles], columns)
    label = write_hirise_rdr(pixels, folder / "product", SAMPLE_ID, *SAMPLE_CENTRE, viewing=SAMPLE_VIEWING)
    outlines, kinds = _product_boxes(tiles, pixels, columns, side)
    wkt = equirectangular_wkt(*SAMPLE_CENTRE)
    boxes = folder / "expert_boxes.geojson"
    write_geojson(boxes, [reproject(o, wkt, lonlat_wkt()) for o in outlines], {"class": kinds})
    training = write_yolo_dataset(folder / "training", 30, 8, seed + 1, side)
    return {"product": label, "boxes": boxes, "training": training}


def _product_boxes(tiles: list, pixels: np.ndarray, columns: int, side: int, scale: float = 0.25):
    """Each tile's expert boxes as polygons in the product's CRS (those centred on null left out)."""
    import shapely

    x0, y0 = corner_for(SAMPLE_CENTRE[0], pixels.shape[1], pixels.shape[0], scale)
    outlines, kinds = [], []
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        for (bx0, by0, bx1, by1), kind in zip(tile.boxes, tile.kinds, strict=False):
            c0, r0, c1, r1 = bx0 + col * side, by0 + row * side, bx1 + col * side, by1 + row * side
            if pixels[int((r0 + r1) / 2), int((c0 + c1) / 2)] == 0:
                continue
            outlines.append(shapely.box(x0 + c0 * scale, y0 - r1 * scale, x0 + c1 * scale, y0 - r0 * scale))
            kinds.append(kind)
    return outlines, kinds
