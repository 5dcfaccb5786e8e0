"""`al-loop compare`: a map's pits against a catalogue of points on the Mars sphere.

Maps are built here with the project's own writers (a ``pits_lonlat`` layer and a
``tiles_<product>`` footprint in a Mars equirectangular CRS, as ``al-loop map`` writes them);
catalogues are CSVs shaped like MGC3 (header shifted by a column, quoted commas, ``n/a``) or
plain lat/lon tables. Positions are placed in metres on the product's plane, so every
distance below is known to the metre."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from al_loop.data import sample_products as sp
from al_loop.data.catalogue import read_catalogue
from al_loop.data.mars import MARS_RADIUS_M, lonlat_wkt, reproject, to_lonlat
from al_loop.data.vectors import write_layer
from al_loop.errors import DatasetError, ProductError, UsageError
from al_loop.science.compare import RadiusRule, compare_map, great_circle_m, match_one_to_one

ROOT = Path(__file__).resolve().parents[1]
MGC3 = ROOT.parent / "shared" / "data" / "mgc3" / "mars_cave_catalog.csv"
MGC3_HEADER = ("longitude:string,latitude:string,Label:string,TypeCode:string,Priority:string,APC_Diameter:string,"
               "APC_Depth:string,Comment:string")
TILE_M = 1024.0  # a product of 2 x 2 tiles of 1024 m: its footprint is x, y within +-1024 m of its centre


class Plane:
    """A Mars equirectangular plane centred on (lat, lon): metres <-> lon/lat."""

    def __init__(self, lat: float, lon: float):
        self.wkt = sp.equirectangular_wkt(lat, lon)
        self.y0 = math.radians(lat) * MARS_RADIUS_M  # its lat_0 is 0: the centre's latitude lies at y = R * lat

    def lonlat(self, dx: float, dy: float) -> tuple[float, float]:
        """(lon -180..180, lat) of the point dx m east, dy m north of the centre (along the plane)."""
        lon, lat = to_lonlat(self.wkt, dx, self.y0 + dy)
        return float(lon), float(lat)

    def square(self, dx: float, dy: float, side: float = 30.0):
        import shapely

        return shapely.box(dx - side / 2, self.y0 + dy - side / 2, dx + side / 2, self.y0 + dy + side / 2)


def write_map(gpkg: Path, plane: Plane, pits: list[tuple[float, float]], product: str = "PSP_A",
              centroid_columns: bool = True, tiles: bool = True) -> None:
    """A map as `al-loop map` writes one: ``pits_<product>`` in the product CRS, ``pits_lonlat``,
    and ``tiles_<product>`` (2 x 2 tiles of ``TILE_M`` around the centre)."""
    import shapely

    outlines = [plane.square(dx, dy) for dx, dy in pits]
    lonlat = [reproject(o, plane.wkt, lonlat_wkt()) for o in outlines]
    ids = np.arange(1, len(pits) + 1)
    write_layer(gpkg, f"pits_{product}", outlines, {"pit_id": ids}, plane.wkt)
    columns = {"pit_id": ids, "product_id": np.array([product] * len(pits), dtype=object),
               "diam_eq_m": np.full(len(pits), 33.9)}
    if centroid_columns:
        positions = [plane.lonlat(dx, dy) for dx, dy in pits]
        columns |= {"centroid_lat": np.array([lat for _, lat in positions]),
                    "centroid_lon_e": np.array([lon % 360.0 for lon, _ in positions])}
    write_layer(gpkg, "pits_lonlat", lonlat, columns, lonlat_wkt())
    if tiles:
        boxes = [shapely.box(x, plane.y0 + y, x + TILE_M, plane.y0 + y + TILE_M) for x in (-TILE_M, 0.0) for y in (-TILE_M, 0.0)]
        write_layer(gpkg, f"tiles_{product}", boxes, {"file": np.array([f"t{i}.png" for i in range(4)], dtype=object)},
                    plane.wkt)


def write_mgc3(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([MGC3_HEADER, *rows]) + "\n")
    return path


def read_layer(path: Path, layer: str) -> tuple[dict, list, dict[str, np.ndarray]]:
    import pyogrio.raw
    import shapely

    meta, _, wkb, fields = pyogrio.raw.read(str(path), layer=layer)
    return meta, list(shapely.from_wkb(wkb)), dict(zip(meta["fields"], fields, strict=False))


@pytest.fixture
def map_with_catalogue(tmp_path):
    """Pits 1 and 3 100 m and 130 m from APC900 (one entry: pit 1 matches it, pit 3 is new, both
    ambiguous), pit 2 with no entry in range; CC9001 and CC9003 (400 m from pit 2) inside the
    footprint with no pit: missed; CC9002 5 km outside it: left aside."""
    plane = Plane(10.0, 120.0)
    write_map(tmp_path / "map.gpkg", plane, [(0.0, 0.0), (700.0, 700.0), (230.0, 0.0)])
    place = {name: plane.lonlat(dx, dy) for name, (dx, dy) in
             {"APC900": (100.0, 0.0), "CC9001": (-600.0, -600.0), "CC9002": (5000.0, 0.0), "CC9003": (700.0, 300.0)}.items()}
    rows = [f"APC900,{place['APC900'][0] % 360:.7f},{place['APC900'][1]:.7f},APC,1,40,30,\"APC, deep? ~40m\"",
            f"CC9001,{place['CC9001'][0] % 360:.7f},{place['CC9001'][1]:.7f},sky,2,n/a,n/a,\"pair, 1km apart, flow\"",
            f"CC9002,{place['CC9002'][0] % 360:.7f},{place['CC9002'][1]:.7f},srp,3,n/a,n/a,far away",
            f"CC9003,{place['CC9003'][0] % 360:.7f},{place['CC9003'][1]:.7f},pin,0,n/a,n/a,"]
    return tmp_path, write_mgc3(tmp_path / "cat.csv", rows)


def test_pits_are_matched_one_to_one_or_new_and_entries_in_the_footprint_without_a_pit_are_missed(map_with_catalogue):
    root, catalogue = map_with_catalogue
    report = compare_map(root / "map.gpkg", catalogue, root / "out.gpkg", root / "summary.json")
    assert report.counts == {"matched": 1, "new": 2, "missed": 2, "ambiguous": 2}
    assert report.catalogue_entries == 4 and report.inside_footprints == 3 and report.footprints == ["PSP_A"]
    assert not report.warnings and report.radius_m is None
    (pit,) = report.matched
    assert pit.pit_id == 1 and pit.ambiguous and pit.candidates == 1
    assert pit.entry.id == "APC900" and pit.entry.type == "APC" and pit.entry.priority == 1
    assert (pit.entry.diameter_m, pit.entry.depth_m, pit.entry.comment) == (40.0, 30.0, "APC, deep? ~40m")
    assert pit.distance_m == pytest.approx(100.0, abs=1.0)
    assert pit.radius_m == pytest.approx(150.0, abs=0.1)  # a 34 m pit: the floor, plus the entry's 7-decimal rounding
    new = {p.pit_id: p for p in report.new}
    assert set(new) == {2, 3} and new[3].ambiguous and not new[2].ambiguous  # 3 had APC900 in range, taken by 1
    missed = {m.entry.id: m for m in report.missed}
    assert set(missed) == {"CC9001", "CC9003"} and {m.product_id for m in report.missed} == {"PSP_A"}
    assert math.isnan(missed["CC9001"].entry.diameter_m) and missed["CC9001"].entry.comment == "pair, 1km apart, flow"
    assert missed["CC9003"].nearest_pit_m == pytest.approx(400.0, abs=1.0)
    assert missed["CC9003"].entry.comment is None

    summary = json.loads((root / "summary.json").read_text())
    assert summary["radius_m"] is None and "max(1 x the pit's diameter, 150 m)" in summary["radius_rule"]
    assert summary["counts"] == {"matched": 1, "new": 2, "missed": 2, "ambiguous": 2}
    assert [r["pit_id"] for r in summary["matched"]] == [1] and summary["matched"][0]["ambiguous"] is True
    assert summary["new"][0]["cat_id"] is None and summary["new"][0]["distance_m"] is None
    assert {r["cat_id"]: r["cat_diameter_m"] for r in summary["missed"]} == {"CC9001": None, "CC9003": None}
    assert summary["matched"][0]["cat_depth_m"] == 30.0 and summary["matched"][0]["cat_type"] == "APC"


def test_the_comparison_geopackage_is_in_mars_lonlat_with_nulls_for_what_is_not_given(map_with_catalogue):
    from pyproj import CRS

    root, catalogue = map_with_catalogue
    out = root / "out.gpkg"
    report = compare_map(root / "map.gpkg", catalogue, out, None)
    assert report.outputs == [out] and not list(root.glob(".out.partial*"))
    meta, geometries, columns = read_layer(out, "pits_compared")
    assert CRS.from_user_input(meta["crs"]).equals(CRS.from_user_input("IAU_2015:49900"))
    assert meta["geometry_type"] == "Polygon" and len(geometries) == 3
    by_pit = {int(i): k for k, i in enumerate(columns["pit_id"])}
    assert list(columns["status"][[by_pit[1], by_pit[2], by_pit[3]]]) == ["matched", "new", "new"]
    assert columns["cat_id"][by_pit[2]] is None and np.isnan(columns["distance_m"][by_pit[2]])
    assert columns["cat_priority"][by_pit[1]] == 1 and columns["cat_diameter_m"][by_pit[1]] == 40.0
    assert list(columns["ambiguous"][[by_pit[1], by_pit[2], by_pit[3]]]) == [True, False, True]
    assert columns["diam_eq_m"][by_pit[1]] == 33.9  # the input layer's own fields are carried
    for name in ("status", "pit_id", "product_id", "cat_id", "cat_type", "cat_priority", "cat_diameter_m", "cat_depth_m",
                 "distance_m", "radius_m", "candidates", "ambiguous"):
        assert name in columns
    meta, points, columns = read_layer(out, "catalogue_missed")
    assert meta["geometry_type"] == "Point" and sorted(columns["cat_id"]) == ["CC9001", "CC9003"]
    assert np.isnan(columns["cat_diameter_m"]).all()
    assert all(-180 <= p.x <= 180 for p in points)


def test_a_larger_radius_matches_what_a_smaller_one_leaves(map_with_catalogue):
    root, catalogue = map_with_catalogue
    report = compare_map(root / "map.gpkg", catalogue, root / "out.gpkg", radius_m=450.0)
    assert report.counts == {"matched": 2, "new": 1, "missed": 1, "ambiguous": 2}
    assert {p.pit_id: p.entry.id for p in report.matched} == {1: "APC900", 2: "CC9003"}
    assert all(p.radius_m == 450.0 for p in report.pits)


@pytest.mark.parametrize("centre_lon", [0.0, 180.0])
def test_across_the_meridians_with_a_plain_lat_lon_csv_and_no_centroid_columns(tmp_path, centre_lon):
    """At 0 the catalogue's -0.002 is 359.998 east; at 180 the pit's outline spans -180/+180 in
    lon/lat and its centroid is found on the sphere, not across the planet."""
    plane = Plane(-20.0, centre_lon)
    write_map(tmp_path / "map.gpkg", plane, [(-50.0, 0.0), (500.0, 500.0)], centroid_columns=False)
    near, missed, outside = plane.lonlat(50.0, 0.0), plane.lonlat(-400.0, -600.0), plane.lonlat(-3000.0, 0.0)
    (tmp_path / "cat.csv").write_text("ID,Lat,Lon,Type\n" + "".join(
        f"{name},{lat:.7f},{lon:.7f},sky\n" for name, (lon, lat) in
        (("near", near), ("missed", missed), ("outside", outside))))
    report = compare_map(tmp_path / "map.gpkg", tmp_path / "cat.csv", tmp_path / "out.gpkg", tmp_path / "s.json")
    assert report.counts == {"matched": 1, "new": 1, "missed": 1, "ambiguous": 0}
    (pit,) = report.matched
    assert pit.pit_id == 1 and pit.entry.id == "near" and pit.distance_m == pytest.approx(100.0, abs=1.0)
    assert 0.0 <= pit.lon_e < 360.0 and abs(((pit.lon_e - centre_lon) + 180) % 360 - 180) < 0.01
    assert [m.entry.id for m in report.missed] == ["missed"]
    assert all(0.0 <= e.lon_e < 360.0 for e in read_catalogue(tmp_path / "cat.csv"))


def test_a_products_valid_pixels_are_its_footprint_for_a_pit_layer_without_one(tmp_path):
    """A layer of points in Mars lon/lat (no tiles layer); the product's left half is null, so an
    entry there is not missed, one over its data is."""
    import shapely

    plane = Plane(5.0, 60.0)
    pixels = np.full((64, 64), 100, np.uint16)
    pixels[:, :32] = 0  # null
    product = sp.write_geotiff(pixels, tmp_path / "P_B.tif", plane.wkt, sp.corner_for(5.0, 64, 64, 16.0), 16.0, nodata=0)
    pit = plane.lonlat(0.0, 400.0)  # 500 m from either entry
    write_layer(tmp_path / "mine.gpkg", "my_pits", [shapely.Point(*pit)], {"name": np.array(["a"], dtype=object)},
                lonlat_wkt(), geometry_type="Point")
    places = {"CC1": plane.lonlat(-300.0, 0.0), "CC2": plane.lonlat(300.0, 0.0)}  # over null, over data
    catalogue = write_mgc3(tmp_path / "cat.csv", [f"{name},{lon % 360:.7f},{lat:.7f},sky,1,n/a,n/a,x"
                                                  for name, (lon, lat) in places.items()])

    bare = compare_map(tmp_path / "mine.gpkg", catalogue, tmp_path / "o1.gpkg")
    assert bare.counts == {"matched": 0, "new": 1, "missed": 0, "ambiguous": 0} and "no footprint" in bare.warnings[0]
    report = compare_map(tmp_path / "mine.gpkg", catalogue, tmp_path / "o2.gpkg", products=[product])
    assert report.counts == {"matched": 0, "new": 1, "missed": 1, "ambiguous": 0} and report.footprints == ["P_B"]
    assert [m.entry.id for m in report.missed] == ["CC2"] and report.missed[0].nearest_pit_m == pytest.approx(500, abs=1)
    meta, geometries, _ = read_layer(tmp_path / "o2.gpkg", "pits_compared")
    assert meta["geometry_type"] == "Point" and len(geometries) == 1


def test_great_circle_distances_on_the_mars_sphere():
    degree = MARS_RADIUS_M * math.pi / 180
    assert great_circle_m(0.0, 10.0, 1.0, 10.0) == pytest.approx(degree)
    assert great_circle_m(0.0, 359.999, 0.0, 0.001) == pytest.approx(0.002 * degree)
    assert great_circle_m(0.0, -179.999, 0.0, 179.999) == pytest.approx(0.002 * degree)
    assert great_circle_m(60.0, 0.0, 60.0, 1.0) == pytest.approx(degree / 2, rel=1e-4)


def metres_east(dx: float) -> float:
    """Degrees of longitude on the equator for ``dx`` metres."""
    return dx / (MARS_RADIUS_M * math.pi / 180)


def test_two_pits_near_one_entry_make_one_match_and_one_new_pit():
    """Nearest neighbour matched both; one to one pairs the nearer and leaves the other new, both flagged."""
    pits = np.array([[metres_east(0.0), 0.0], [metres_east(90.0), 0.0]])
    matches = match_one_to_one(pits, np.array([40.0, 40.0]), np.array([[metres_east(50.0), 0.0]]))
    assert list(matches.entry) == [-1, 0] and matches.distance_m[1] == pytest.approx(40.0)
    assert list(matches.ambiguous) == [True, True] and list(matches.pits_in_range) == [2]


def test_the_pairing_maximises_pairs_before_it_minimises_distance():
    """Pit A is nearest to entry 1, but entry 1 is pit B's only candidate: greedy nearest-first pairs
    A-1 and leaves B unpaired; the assignment pairs A-0 and B-1."""
    pits = np.array([[metres_east(0.0), 0.0], [metres_east(200.0), 0.0]])
    cat = np.array([[metres_east(-140.0), 0.0], [metres_east(60.0), 0.0]])
    matches = match_one_to_one(pits, np.array([20.0, 20.0]), cat)
    assert list(matches.entry) == [0, 1] and list(matches.distance_m) == pytest.approx([140.0, 140.0])
    assert list(matches.candidates) == [2, 1] and all(matches.ambiguous)


@pytest.mark.parametrize("diameter, distance, matched", [
    (40.0, 250.0, False),  # a 40 m pit never takes an entry 250 m away (a fixed 300 m did)
    (40.0, 140.0, True),  # within the 150 m floor for the catalogue's position error
    (300.0, 280.0, True),  # a large pit: one diameter
    (300.0, 320.0, False),
    (float("nan"), 140.0, True),  # no diameter: the floor
])
def test_the_default_radius_scales_with_the_pit_above_a_floor(diameter, distance, matched):
    matches = match_one_to_one(np.array([[0.0, 0.0]]), np.array([diameter]), np.array([[metres_east(distance), 0.0]]))
    assert bool(matches.entry[0] == 0) is matched
    assert match_one_to_one(np.array([[0.0, 0.0]]), np.array([40.0]), np.array([[metres_east(250.0), 0.0]]),
                            RadiusRule(fixed_m=300.0)).entry[0] == 0


def test_an_entry_written_with_few_decimals_is_given_their_rounding(tmp_path):
    """MGC3 writes some positions to two decimals (0.005 degrees is 296 m): the radius widens by it."""
    path = write_mgc3(tmp_path / "c.csv", ["CC1,10.51,5.25,sky,1,n/a,n/a,x", "CC2,10.5123,5.2512,sky,1,n/a,n/a,x"])
    coarse, fine = read_catalogue(path)
    degree = MARS_RADIUS_M * math.pi / 180
    assert coarse.rounding_m == pytest.approx(math.hypot(0.005 * degree, 0.005 * degree * math.cos(math.radians(5.25))))
    assert fine.rounding_m < 5.0
    matches = match_one_to_one(np.array([[10.51 + metres_east(300.0), 5.25]]), np.array([40.0]), np.array([[10.51, 5.25]]),
                               cat_rounding_m=np.array([coarse.rounding_m]))
    assert matches.entry[0] == 0 and matches.radius_m[0] == pytest.approx(150.0 + coarse.rounding_m)


def test_a_footprint_without_an_entry_names_the_nearest_and_its_distance(tmp_path):
    plane = Plane(0.0, 30.0)
    write_map(tmp_path / "map.gpkg", plane, [(0.0, 0.0)])
    far = plane.lonlat(TILE_M + 3000.0, 0.0)  # 3 km east of the footprint's edge
    catalogue = write_mgc3(tmp_path / "cat.csv", [f"CC7,{far[0] % 360:.7f},{far[1]:.7f},sky,1,n/a,n/a,x"])
    report = compare_map(tmp_path / "map.gpkg", catalogue, tmp_path / "o.gpkg", tmp_path / "s.json")
    assert report.inside_footprints == 0 and len(report.empty) == 1
    (empty,) = report.empty
    assert empty.product_id == "PSP_A" and empty.nearest_id == "CC7" and empty.nearest_m == pytest.approx(3000.0, abs=5.0)
    assert any("no catalogue entry inside its footprint; the nearest is CC7, 3 km" in w for w in report.warnings)
    assert json.loads((tmp_path / "s.json").read_text())["empty_footprints"][0]["nearest_cat_id"] == "CC7"


def test_a_layer_in_the_products_projected_crs_is_reprojected_and_keeps_its_fields(tmp_path):
    """`measure` writes its layer in the product's CRS: compare reads it and places it as its lon/lat twin."""
    plane = Plane(-5.5, 240.0)
    outlines = [plane.square(0.0, 0.0, 40.0), plane.square(600.0, 0.0, 40.0)]
    fields = {"depth_m": np.array([12.5, np.nan]), "confidence": np.array([0.9, 0.6]), "kind": np.array(["a", "b"], dtype=object)}
    write_layer(tmp_path / "measured.gpkg", "measured", outlines, fields, plane.wkt)
    write_layer(tmp_path / "twin.gpkg", "pits", [reproject(o, plane.wkt, lonlat_wkt()) for o in outlines], fields, lonlat_wkt())
    entry = plane.lonlat(30.0, 0.0)
    catalogue = write_mgc3(tmp_path / "cat.csv", [f"CC1,{entry[0] % 360:.7f},{entry[1]:.7f},sky,1,n/a,n/a,x"])
    projected = compare_map(tmp_path / "measured.gpkg", catalogue, tmp_path / "p.gpkg")
    twin = compare_map(tmp_path / "twin.gpkg", catalogue, tmp_path / "t.gpkg")
    assert [p.status for p in projected.pits] == [p.status for p in twin.pits] == ["matched", "new"]
    for a, b in zip(projected.pits, twin.pits, strict=True):
        assert great_circle_m(a.lat, a.lon_e, b.lat, b.lon_e) < 0.01
    assert projected.pits[0].distance_m == pytest.approx(30.0, abs=0.5)
    _, _, columns = read_layer(tmp_path / "p.gpkg", "pits_compared")
    assert list(columns["depth_m"][:1]) == [12.5] and np.isnan(columns["depth_m"][1])
    assert list(columns["kind"]) == ["a", "b"] and list(columns["confidence"]) == [0.9, 0.6]


def test_a_layer_without_a_crs_is_refused_naming_the_file(tmp_path):
    plane = Plane(0.0, 0.0)
    write_layer(tmp_path / "bare.gpkg", "pits", [plane.square(0, 0)], {"a": np.array([1])}, None)
    catalogue = write_mgc3(tmp_path / "cat.csv", ["CC1,0.0,0.0,sky,1,n/a,n/a,x"])
    with pytest.raises(UsageError, match="layer pits has no CRS") as caught:
        compare_map(tmp_path / "bare.gpkg", catalogue, tmp_path / "o.gpkg")
    assert str(tmp_path / "bare.gpkg") in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "o.gpkg").exists()


def test_the_real_mgc3_catalogue_is_read_by_position():
    if not MGC3.is_file():
        pytest.skip(f"the MGC3 catalogue is not at {MGC3} (see ../shared/data/mgc3/README.md)")
    entries = read_catalogue(MGC3)
    assert len(entries) == 1062 and len({e.id for e in entries}) == 1062
    assert all(-90 <= e.lat <= 90 and 0 <= e.lon_e < 360 for e in entries)
    types = {t: sum(e.type == t for e in entries) for t in ("sky", "srp", "APC", "crk", "pin", "flr", "pit", "irr",
                                                            "rim", "lat", "end", "pol", "kst")}
    assert types == {"sky": 354, "srp": 218, "APC": 132, "crk": 87, "pin": 60, "flr": 42, "pit": 37, "irr": 36, "rim": 30,
                     "lat": 27, "end": 21, "pol": 8, "kst": 7}
    by_id = {e.id: e for e in entries}
    assert by_id["APC007"].comment == "APC, deep? ~40m" and by_id["APC007"].diameter_m == 40.0
    assert by_id["APC140"].diameter_m == pytest.approx(math.sqrt(135 * 195))  # given as 135x195
    assert math.isnan(by_id["CC0930"].diameter_m) and by_id["CC0930"].priority == 1
    assert {e.priority for e in entries} == {0, 1, 2, 3}


def test_bad_requests_and_unreadable_inputs_say_what_is_wrong(map_with_catalogue, tmp_path):
    root, catalogue = map_with_catalogue
    for radius in (0.0, -5.0, float("nan")):
        with pytest.raises(UsageError, match="matching radius") as raised:
            compare_map(root / "map.gpkg", catalogue, root / "out.gpkg", radius_m=radius)
        assert raised.value.param == "radius_m"  # the library names the parameter; the CLI adds its flag
    with pytest.raises(UsageError, match="no such map file"):
        compare_map(root / "none.gpkg", catalogue, root / "out.gpkg")
    with pytest.raises(UsageError, match="one of the inputs"):
        compare_map(root / "map.gpkg", catalogue, root / "map.gpkg")
    with pytest.raises(UsageError, match="one of the inputs"):
        compare_map(root / "map.gpkg", catalogue, root / "out.gpkg", catalogue)
    plane = Plane(0.0, 0.0)
    write_layer(root / "tiles_only.gpkg", "tiles_X", [plane.square(0, 0)], {"file": np.array(["a"], dtype=object)}, plane.wkt)
    with pytest.raises(UsageError, match="no pits_lonlat layer and 0 other layers"):
        compare_map(root / "tiles_only.gpkg", catalogue, root / "out.gpkg")
    with pytest.raises(ProductError, match="no such file"):
        compare_map(root / "map.gpkg", catalogue, root / "out.gpkg", products=[root / "none.tif"])
    assert not (root / "out.gpkg").exists()


@pytest.mark.parametrize("text, message", [
    (MGC3_HEADER + "\nCC1,10.5,-95.0,sky,1,n/a,n/a,x\n", "line 2: latitude '-95.0'"),
    (MGC3_HEADER + "\nCC1,10.5,5.0,sky,1,n/a,n/a,x\n\nCC2,ten,5.0,sky,1,n/a,n/a,x\n", "line 4: the longitude 'ten'"),
    (MGC3_HEADER + "\nCC1,10.5,5.0,sky\n", "line 2: 4 columns"),
    (MGC3_HEADER + "\nCC1,10.5,5.0,sky,high,n/a,n/a,x\n", "the priority 'high'"),
    ("name,x,y\na,1,2\n", "a header naming 'lat' and 'lon'"),
    ("", "empty catalogue"),
])
def test_a_catalogue_row_that_cannot_be_read_names_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=message) as caught:
        read_catalogue(path)
    assert str(path) in str(caught.value)


def test_an_unquoted_comma_in_an_mgc3_comment_stays_in_the_comment(tmp_path):
    path = write_mgc3(tmp_path / "c.csv", ["CC1,350.5,-5.25,sky,2,n/a,n/a,two pits, one deep"])
    (entry,) = read_catalogue(path)
    assert (entry.id, entry.lon_e, entry.lat, entry.priority, entry.comment) == ("CC1", 350.5, -5.25, 2, "two pits, one deep")


def test_the_command_prints_the_counts_and_writes_both_files(map_with_catalogue, capsys):
    from al_loop.cli import main

    root, catalogue = map_with_catalogue
    assert main(["compare", str(root / "map.gpkg"), "--catalogue", str(catalogue), "--out", str(root / "c.gpkg"),
                 "--json", str(root / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "1 matched, 2 new, 2 missed" in out and (root / "c.gpkg").is_file()
    assert json.loads((root / "c.json").read_text())["counts"]["matched"] == 1
    assert main(["compare", str(root / "map.gpkg"), "--catalogue", str(catalogue), "--out", str(root / "d.gpkg"),
                 "--radius-m", "-1"]) == 2
    assert "--radius-m" in capsys.readouterr().err and not (root / "d.gpkg").exists()
