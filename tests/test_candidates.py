"""`al-loop candidates`'s library half (issue 35): the sample product's pits as a layer in the
product's own (projected) CRS, a catalogue, and the HiRISE index of tests/hirise_scene.py served
over HTTP; candidates, their coverage, chips, page and HiWish rows checked against what the scene
was built to hold."""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest

from al_loop.data.hirise_index import fetch_index, load_rdr_index
from al_loop.data.mars import MARS_LONLAT, not_on_mars, reproject
from al_loop.data.products import open_product
from al_loop.data.sample_products import SAMPLE_CENTRE, SAMPLE_ID, write_hirise_rdr
from al_loop.data.vectors import write_layer
from al_loop.errors import UsageError
from al_loop.targets.candidates import CandidatesRequest, find_candidates, priority_score
from al_loop.targets.hiwish import DESCRIPTION_CHARS
from tests.hirise_scene import DTM_ID, scene_rows, serve, write_archive

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def sample_product(folder: Path) -> tuple[Path, list, list[str]]:
    """The product of ``al-loop sample --product`` (its tiles, mosaic, label with ESP_013951_1955's sun
    and view, and expert boxes in the product's CRS), without the training set it also writes."""
    from al_loop.data.sample_products import SAMPLE_VIEWING, _product_boxes, mosaic
    from al_loop.data.synthetic import generate_tile

    columns, side = 3, 512
    tiles = [generate_tile(50_000 + i, side) for i in range(6)]  # write_sample_product's seed 0
    pixels = mosaic([t.image for t in tiles], columns)
    label = write_hirise_rdr(pixels, folder, SAMPLE_ID, *SAMPLE_CENTRE, viewing=SAMPLE_VIEWING)
    outlines, kinds = _product_boxes(tiles, pixels, columns, side)
    return label, outlines, kinds


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The sample product, a pit layer in its CRS, a catalogue and the index fetched over HTTP."""
    root = tmp_path_factory.mktemp("candidates")
    product, local, kinds = sample_product(root / "sample")
    info = open_product(product)
    lonlat = [reproject(g, info.crs_wkt, MARS_LONLAT) for g in local]
    n = len(local)
    assert n >= 4, "the sample product holds a few pits"
    kinds = np.array(kinds, dtype=object)
    columns = {"pit_id": np.arange(1, n + 1), "product_id": np.array([SAMPLE_ID] * n, dtype=object), "class": kinds,
               "confidence": np.linspace(0.95, 0.55, n), "diameter_m": np.array([math.sqrt(g.area) for g in local]),
               "depth_m": np.array([math.sqrt(g.area) * (0.6 if k == "skylight" else 0.15) for g, k in zip(local, kinds, strict=True)]),
               "depth_err_m": np.full(n, 1.5), "depth_is_minimum": np.array([k == "skylight" for k in kinds]),
               "touches_edge": np.zeros(n, bool)}
    pits = root / "measured.gpkg"
    write_layer(pits, "measured", local, columns, info.crs_wkt)
    first = lonlat[0].centroid
    catalogue = root / "catalogue.csv"
    missed = _far_from_pits(info, local)
    catalogue.write_text("id,lat,lon\n"
                         f"CAT-1,{first.y:.7f},{(first.x % 360) + 0.0002:.7f}\n"  # ~12 m from pit 1
                         f"CAT-2,{missed[0]:.7f},{missed[1]:.7f}\n"
                         "CAT-3,10.0,20.0\n")
    write_archive(root / "archive")
    with serve(root / "archive") as (base, _):
        index = fetch_index(base, root / "index", progress=False)[0].parent
    return {"root": root, "product": product, "pits": pits, "lonlat": lonlat, "local": local,
            "catalogue": catalogue, "index": index, "n": n, "info": info}


def _far_from_pits(info, local) -> tuple[float, float]:
    """(lat, lon E) of the valid pixel of the product farthest from every pit: a catalogue entry the map missed."""
    from al_loop.data.mars import to_lonlat

    a, _, c, _, e, f = info.transform
    cols, rows = np.meshgrid(np.arange(32, info.width - 32, 16), np.arange(32, info.height - 32, 16))
    keep = cols + rows > 600  # clear of the null corner (col + row < 512)
    x, y = c + a * cols[keep], f + e * rows[keep]
    centres = np.array([[g.centroid.x, g.centroid.y] for g in local])
    gap = np.hypot(x[:, None] - centres[:, 0], y[:, None] - centres[:, 1]).min(axis=1)
    best = int(gap.argmax())
    assert gap[best] > 60, "the sample product has room without pits"
    lon, lat = to_lonlat(info.crs_wkt, x[best], y[best])
    return float(lat), float(lon) % 360


RADIUS_M = 20.0  # the sample product is 384 m across: compare's default 300 m would match every pit


@pytest.fixture(scope="module")
def result(scene):
    out = scene["root"] / "out"
    request = CandidatesRequest(pits=scene["pits"], out=out, products=[scene["product"]], catalogue=scene["catalogue"],
                                index=scene["index"], hiwish=out / "hiwish.csv", radius_m=RADIUS_M)
    return find_candidates(request), out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_pits_in_the_catalogue_are_left_out(scene, result):
    report, out = result
    assert report.catalogued_left_out == 1
    assert len(report.candidates) == scene["n"] - 1
    assert "1" not in {c.id for c in report.candidates}, "pit 1 lies 12 m from CAT-1"
    rows = read_csv(out / "candidates.csv")
    assert [r["id"] for r in rows] == [c.id for c in report.candidates]
    assert all(r["catalogued"] == "False" and r["cat_id"] in ("CAT-1", "CAT-2") for r in rows), "nearest entry named"
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_each_candidate_carries_its_coverage_and_the_dtm_over_it(scene, result):
    report, out = result
    index = load_rdr_index(scene["index"])
    rot = list(index.observation_id).index("ESP_012000_1710")
    (lat0, lat1), (lon0, lon1) = index.lat_range[rot], index.lon_range[rot]
    for row in read_csv(out / "candidates.csv"):
        lat, lon = float(row["lat"]), float(row["lon_e"])
        assert lat0 <= lat <= lat1 and lon0 <= lon <= lon1, "the rotated strip's box holds every pit"
        assert row["images"] == "ESP_011000_1710;ESP_011100_1710", "but not the strip itself"
        assert row["stereo"] == "dtm" and row["dtm"] == DTM_ID and row["n_images"] == "2"
        assert row["image_incidence"] == "55.0;58.0"


def test_positions_and_outlines_come_out_in_mars_lonlat(scene, result):
    import pyogrio.raw
    import shapely

    report, out = result
    meta, _, wkb, fields = pyogrio.raw.read(str(out / "candidates.gpkg"), layer="candidates")
    assert not_on_mars(meta["crs"]) is None and "IAU" in meta["crs"]
    outlines = shapely.from_wkb(wkb)
    columns = dict(zip(meta["fields"], fields, strict=True))
    by_id = {str(i + 1): g for i, g in enumerate(scene["lonlat"])}
    for pit, outline, lat, lon in zip(columns["id"], outlines, columns["lat"], columns["lon_e"], strict=True):
        expected = by_id[pit]
        assert outline.equals_exact(expected, 1e-7), "the outline as given, in lon/lat"
        assert lat == pytest.approx(expected.centroid.y, abs=1e-5) and lon == pytest.approx(expected.centroid.x % 360, abs=1e-5)
        assert 0 <= lon < 360


def test_chips_are_square_full_resolution_pngs(scene, result):
    from PIL import Image

    report, out = result
    for candidate in report.candidates:
        with Image.open(out / candidate.chip) as chip:
            assert chip.width == chip.height >= 128 and chip.mode == "RGB"
            # about three diameters across at 0.25 m/px, never under 128 px
            assert chip.width == max(128, math.ceil(3 * candidate.diameter_m / 0.25))
            pixels = np.asarray(chip)
            assert (np.abs(pixels[..., 0].astype(int) - pixels[..., 2]) > 100).any(), "the yellow outline is drawn"


def test_the_product_record_counts_catalogue_entries_in_its_footprint(scene, result):
    report, _ = result
    (record,) = report.products
    assert record.product_id == SAMPLE_ID and record.catalogue_in_footprint == 2 and record.catalogue_found == 1
    assert record.recall == 0.5 and record.pits == scene["n"] - 1
    info = scene["info"]
    assert record.valid_area_m2 < 0.95 * info.width * info.height * 0.25 ** 2, "the null corner is not searched"
    assert record.incidence_deg == pytest.approx(49.990076) and record.map_scale_m == 0.25
    assert record.smallest_diameter_m == pytest.approx(2.5), "10 px at 0.25 m/px: export's completeness limit"
    # the sample's label has no SOLAR_LONGITUDE: null, and the page says why, never a made-up number
    assert record.solar_longitude_deg is None and "SOLAR_LONGITUDE" in record.why_unknown()["solar_longitude_deg"]


def test_hiwish_rows_are_ready_to_copy(result):
    report, out = result
    rows = read_csv(out / "hiwish.csv")
    assert len(rows) == len(report.candidates)
    assert list(rows[0])[:5] == ["CANDIDATE_ID", "CENTER_LATITUDE", "CENTER_LONGITUDE", "PRIORITY_OVERALL", "DESCRIPTION"]
    priorities = [int(r["PRIORITY_OVERALL"]) for r in rows]
    assert priorities == sorted(priorities) and set(priorities) <= {1, 2, 3, 4, 5}
    for row, candidate in zip(rows, report.candidates, strict=True):
        assert len(row["DESCRIPTION"]) <= DESCRIPTION_CHARS
        assert float(row["CENTER_LONGITUDE"]) == pytest.approx(candidate.lon_e, abs=1e-5)
        assert "Not in the catalogue" in row["SCIENCE_RATIONALE"] and DTM_ID in row["SCIENCE_RATIONALE"]
        assert row["PRIMARY_SCIENCE_THEME"] and row["SUGGESTED_GEOMETRY"]


def test_all_keeps_catalogued_pits_and_names_their_entry(scene):
    out = scene["root"] / "all"
    report = find_candidates(CandidatesRequest(pits=scene["pits"], out=out, catalogue=scene["catalogue"], keep_all=True,
                                               radius_m=RADIUS_M))
    assert len(report.candidates) == scene["n"] and report.catalogued_left_out == 0
    first = next(c for c in report.candidates if c.id == "1")
    assert first.catalogued and first.cat_id == "CAT-1" and first.cat_distance_m < 20
    assert sum(c.catalogued for c in report.candidates) == 1
    assert all(not c.chip for c in report.candidates) and any("no --product" in w for w in report.warnings)


def test_a_pit_outside_every_footprint_gets_empty_coverage(scene, tmp_path):
    seam_only = [r for r in scene_rows() if r["OBSERVATION_ID"] == "ESP_016000_2100"]
    index = write_archive(tmp_path / "archive", seam_only)
    report = find_candidates(CandidatesRequest(pits=scene["pits"], out=tmp_path / "out", index=index))
    assert len(report.candidates) == scene["n"]
    for row in read_csv(tmp_path / "out" / "candidates.csv"):
        assert row["n_images"] == "0" and row["images"] == "" and row["stereo"] == "" and row["dtm"] == ""
        assert row["suggested_next"].startswith("first HiRISE image")


def test_a_product_without_viewing_geometry_still_gets_chips(scene, tmp_path):
    import rasterio

    with rasterio.open(scene["info"].path) as src:
        pixels = src.read(1)
    bare = write_hirise_rdr(pixels, tmp_path / "bare", SAMPLE_ID, *SAMPLE_CENTRE)  # no VIEWING_PARAMETERS
    report = find_candidates(CandidatesRequest(pits=scene["pits"], out=tmp_path / "out", products=[bare]))
    assert all((tmp_path / "out" / c.chip).is_file() for c in report.candidates)
    (record,) = report.products
    assert record.incidence_deg is None and record.emission_deg is None and record.map_scale_m == 0.25
    assert record.why_unknown()["incidence_deg"] == "the label has no INCIDENCE_ANGLE"
    assert record.catalogue_in_footprint is None and record.why_unknown()["recall"] == "no catalogue given"


def test_the_same_pits_in_lonlat_give_the_same_candidates(scene, result, tmp_path):
    """The layer in the product's projected CRS (what measure writes) and its lon/lat twin agree."""
    report, _ = result
    lonlat = tmp_path / "lonlat.gpkg"
    kinds = ["skylight" if "depth_is_minimum" in c.flags else c.type for c in report.candidates]
    write_layer(lonlat, "pits_lonlat", scene["lonlat"], {"pit_id": np.arange(1, scene["n"] + 1)}, MARS_LONLAT)
    twin = find_candidates(CandidatesRequest(pits=lonlat, out=tmp_path / "out", catalogue=scene["catalogue"],
                                             radius_m=RADIUS_M))
    by_id = {c.id: c for c in twin.candidates}
    assert set(by_id) == {c.id for c in report.candidates}
    for c in report.candidates:
        assert (by_id[c.id].lat, by_id[c.id].lon_e) == pytest.approx((c.lat, c.lon_e), abs=1e-6)
    assert kinds == [c.type for c in report.candidates], "skylights, and only they, carry depth_is_minimum"


def test_compares_rule_pairs_one_pit_per_entry_and_flags_the_crowd(scene, tmp_path):
    """Without --radius-m compare's size rule holds (here its 150 m floor): several pits lie in
    CAT-1's range, one is paired with it, and that pairing is flagged ambiguous."""
    from al_loop.science.compare import great_circle_m

    cat1 = next(line for line in scene["catalogue"].read_text().splitlines() if line.startswith("CAT-1"))
    lat, lon = (float(v) for v in cat1.split(",")[1:])
    centres = [g.centroid for g in scene["lonlat"]]
    in_range = sum(great_circle_m(lat, lon, c.y, c.x % 360) <= 150.0 for c in centres)
    assert in_range >= 2, "the scene puts several pits within 150 m of CAT-1"
    report = find_candidates(CandidatesRequest(pits=scene["pits"], out=tmp_path / "out", catalogue=scene["catalogue"],
                                               keep_all=True))
    matched = [c for c in report.candidates if c.cat_id == "CAT-1" and c.catalogued]
    assert [c.id for c in matched] == ["1"] and "ambiguous" in matched[0].flags


def test_a_layer_without_crs_is_refused_in_one_line(scene, tmp_path):
    bare = tmp_path / "nocrs.gpkg"
    write_layer(bare, "pits", scene["local"], {"pit_id": np.arange(scene["n"])}, None)
    with pytest.raises(UsageError) as err:
        find_candidates(CandidatesRequest(pits=bare, out=tmp_path / "out"))
    assert "\n" not in str(err.value) and "no CRS" in str(err.value)
    assert not (tmp_path / "out").exists(), "nothing written"


def test_the_priority_score_follows_its_documented_rule():
    base = priority_score(0.7, False, 0.2, "pit")
    assert priority_score(0.9, False, 0.2, "pit") > base, "more confident"
    assert priority_score(0.7, True, 0.2, "pit") == pytest.approx(base - 0.25), "catalogued"
    assert priority_score(0.7, False, 0.5, "pit") > base and priority_score(0.7, False, 0.9, "pit") == priority_score(
        0.7, False, 0.5, "pit"), "deeper, up to d/D 0.5"
    assert priority_score(0.7, False, 0.2, "skylight") == pytest.approx(base + 0.075), "a skylight"
    assert priority_score(1.0, False, 0.6, "skylight") == pytest.approx(1.0)


@pytest.mark.server
def test_the_page_opens_from_disk_sorts_and_shows_every_chip(result):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    report, out = result
    shots = Path(os.environ.get("AL_LOOP_SCREENSHOTS", out))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        loaded = page.eval_on_selector_all("#candidates img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
        ids = lambda: page.eval_on_selector_all("#candidates tbody tr", "rows => rows.map(r => r.cells[1].textContent)")  # noqa: E731
        before = ids()
        page.click("#candidates th:has-text('diameter m')")
        ascending = ids()
        headers = page.eval_on_selector_all("#products th", "ths => ths.map(t => t.textContent)")
        cells = page.eval_on_selector_all("#products tbody td", "tds => tds.map(t => [t.textContent, t.title])")
        page.screenshot(path=str(shots / "candidates-page.png"), full_page=True)
        browser.close()
    assert not errors and all(url.startswith("file://") for url in requests)
    assert len(loaded) == len(report.candidates) and all(loaded)
    by_diameter = [c.id for c in sorted(report.candidates, key=lambda c: c.diameter_m)]
    assert before == [c.id for c in report.candidates] and ascending == by_diameter and ascending != before
    # the product's coverage record as the page shows it: the numbers, and an unknown Ls as an empty
    # cell whose tooltip (and the last column) says why
    shown = dict(zip(headers, cells, strict=True))
    (record,) = report.products
    assert shown["product"][0] == SAMPLE_ID and shown["recall %"][0] == "50" and shown["found"][0] == "1"
    assert shown["scale m/px"][0] == "0.25" and shown["smallest D m"][0] == "2.5" and shown["incidence"][0] == "50.0"
    assert float(shown["valid area km²"][0]) == pytest.approx(record.valid_area_m2 / 1e6, abs=1e-3)
    assert shown["Ls"] == ["", "the label has no SOLAR_LONGITUDE"] and "SOLAR_LONGITUDE" in shown["not known"][0]
