"""The HiRISE cumulative index (issue 35): fetched over HTTP from an archive laid out like the PDS's,
read from its labels' columns, cached, refused when missing or truncated; and coverage, stereo and
the next image queried from it (the scene is described in tests/hirise_scene.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from al_loop.data.hirise_index import (
    RDR_LAYOUT,
    RDR_RECORD_BYTES,
    RDR_STEM,
    RdrIndex,
    fetch_index,
    load_dtm_index,
    load_rdr_index,
    write_index,
)
from al_loop.errors import DatasetError, FetchError
from al_loop.targets.coverage import CoverageIndex, convergence_deg, floor_incidence_deg
from tests.hirise_scene import DTM_ID, POINTS, scene_rows, serve, write_archive


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """The scene's index fetched over HTTP into a cache folder: (folder, files, server log)."""
    root = tmp_path_factory.mktemp("archive")
    write_archive(root)
    cache = tmp_path_factory.mktemp("index-cache")
    with serve(root) as (base, server):
        files = fetch_index(base, cache, progress=False)
        first = list(server.requests)
        again = fetch_index(base, cache, progress=False)
        second = server.requests[len(first):]
    return cache, files, first, again, second


@pytest.fixture(scope="module")
def coverage(fetched) -> CoverageIndex:
    return CoverageIndex.from_folder(fetched[0])


def test_fetch_index_downloads_the_four_files_once(fetched):
    cache, files, first, again, second = fetched
    assert [f.name for f in files] == ["RDRCUMINDEX.LBL", "RDRCUMINDEX.TAB", "DTMCUMINDEX.LBL", "DTMCUMINDEX.TAB"]
    assert all(f.parent == cache and f.stat().st_size > 0 for f in files)
    assert {p for m, p in first if m == "GET"} == {f"/PDS/INDEX/{f.name}" for f in files}
    assert again == files and not [p for m, p in second if m == "GET"], "whole files are not downloaded again"
    assert not list(cache.glob("*.part"))


def test_the_rdr_index_is_read_from_its_label_and_keeps_red_products_only(fetched):
    index = load_rdr_index(fetched[0])
    written = [r for r in scene_rows() if r["PRODUCT_ID"].endswith("_RED")]
    assert list(index.product_id) == [r["PRODUCT_ID"] for r in written]
    assert np.allclose(index.emission, [r["EMISSION_ANGLE"] for r in written], atol=1e-5)
    assert np.allclose(index.incidence, [r["INCIDENCE_ANGLE"] for r in written], atol=1e-4)
    assert np.allclose(index.corner_lat[:, 2], [r["CORNER3_LATITUDE"] for r in written], atol=1e-4)
    assert np.allclose(index.corner_lon[:, 3], [r["CORNER4_LONGITUDE"] for r in written], atol=1e-4)
    assert list(index.stereo_flag) == [r["STEREO_FLAG"] == "YES" for r in written]
    assert index.start_time[0].startswith("2009-01-01T12:00")
    dtm = load_dtm_index(fetched[0])
    assert list(dtm.product_id) == [DTM_ID] and list(dtm.left) == ["ESP_011000_1710"]


def test_columns_are_located_by_the_label_not_by_fixed_offsets(tmp_path):
    """The same rows in a layout whose columns sit 7 bytes further on (a wider first column) read the same."""
    rows = scene_rows()
    wider = [(name, kind, start + (7 if name != "VOLUME_ID" else 0), width + (7 if name == "VOLUME_ID" else 0), fmt)
             for name, kind, start, width, fmt in RDR_LAYOUT]
    write_index(tmp_path / "moved", RDR_STEM, rows, wider, RDR_RECORD_BYTES + 7)
    write_index(tmp_path / "real", RDR_STEM, rows)
    moved, real = load_rdr_index(tmp_path / "moved"), load_rdr_index(tmp_path / "real")
    assert (tmp_path / "moved" / "RDRCUMINDEX.TAB").stat().st_size == len(rows) * (RDR_RECORD_BYTES + 7)
    assert list(moved.observation_id) == list(real.observation_id)
    assert np.array_equal(moved.corner_lon, real.corner_lon) and np.array_equal(moved.sub_spacecraft, real.sub_spacecraft)


def test_the_parsed_columns_are_cached_and_refreshed_when_the_table_changes(tmp_path):
    rows = scene_rows()
    write_index(tmp_path, RDR_STEM, rows)
    load_rdr_index(tmp_path)
    cache = tmp_path / "RDRCUMINDEX.columns.npz"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    load_rdr_index(tmp_path)
    assert cache.stat().st_mtime_ns == stamp, "a current cache is read, not written again"
    write_index(tmp_path, RDR_STEM, rows[:3])  # next month's index: a new table
    assert len(load_rdr_index(tmp_path)) == 3


def test_a_missing_index_says_to_fetch_it(tmp_path):
    with pytest.raises(DatasetError) as err:
        CoverageIndex.from_folder(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "al-loop fetch --index" in message and "RDRCUMINDEX.LBL" in message


@pytest.mark.parametrize("cut", ["mid-record", "whole records"])
def test_a_truncated_index_says_to_fetch_it_again_even_with_an_old_cache(tmp_path, cut):
    write_index(tmp_path, RDR_STEM, scene_rows())
    load_rdr_index(tmp_path)  # a cache of the whole table exists
    table = tmp_path / "RDRCUMINDEX.TAB"
    size = table.stat().st_size
    with open(table, "r+b") as fh:
        fh.truncate(size - RDR_RECORD_BYTES // 2 if cut == "mid-record" else size - 2 * RDR_RECORD_BYTES)
    with pytest.raises(DatasetError) as err:
        load_rdr_index(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "truncated" in message and "al-loop fetch --index" in message


def test_a_table_of_another_layout_than_its_label_is_refused(tmp_path):
    write_index(tmp_path, RDR_STEM, scene_rows())
    label = tmp_path / "RDRCUMINDEX.LBL"
    count = len(scene_rows())
    assert count == 10
    # a label for 10-byte records over the same 8210 bytes: whole in size, but its records do not end in a line break
    label.write_text(label.read_text().replace("RECORD_BYTES = 821", "RECORD_BYTES = 10").replace(
        f"ROWS = {count}", "ROWS = 821"))
    with pytest.raises(DatasetError, match="do not end every 10 bytes.*al-loop fetch --index"):
        load_rdr_index(tmp_path)


def test_a_table_longer_than_its_label_says_is_refused(tmp_path):
    """Next month's table beside last month's label: pdr would read the label's rows and drop the rest."""
    write_index(tmp_path, RDR_STEM, scene_rows())
    label = tmp_path / "RDRCUMINDEX.LBL"
    label.write_text(label.read_text().replace(f"ROWS = {len(scene_rows())}", "ROWS = 7"))
    with pytest.raises(DatasetError, match="holds 10 records, its label RDRCUMINDEX.LBL says 7.*al-loop fetch --index"):
        load_rdr_index(tmp_path)


def test_an_archive_without_the_index_names_the_url(tmp_path):
    (tmp_path / "PDS").mkdir()
    with serve(tmp_path) as (base, _), pytest.raises(FetchError, match="INDEX/RDRCUMINDEX.LBL") as err:
        fetch_index(base, tmp_path / "cache", progress=False)
    assert err.value.status == 404


# ---- coverage --------------------------------------------------------------------------------------------------


def ids(cov) -> set[str]:
    return {o.observation_id for o in cov.observations}


def test_a_rotated_strip_whose_box_holds_the_point_does_not_cover_it(coverage):
    lat, lon = POINTS["A"]
    row = list(coverage.rdr.observation_id).index("ESP_012000_1710")
    (lat0, lat1), (lon0, lon1) = coverage.rdr.lat_range[row], coverage.rdr.lon_range[row]
    assert lat0 <= lat <= lat1 and lon0 <= lon <= lon1, "the scene's point lies in the strip's min/max box"
    assert "ESP_012000_1710" not in ids(coverage.at(lat, lon))


def test_a_dtm_pair_covering_the_point(coverage):
    cov = coverage.at(*POINTS["A"])
    assert ids(cov) == {"ESP_011000_1710", "ESP_011100_1710"}
    assert cov.stereo == "dtm" and cov.dtm == [DTM_ID]
    row = cov.columns()
    assert row["dtm"] == DTM_ID and row["n_images"] == 2 and row["image_dates"] == "2009-01-01;2009-03-01"
    assert row["image_ls"] == "100.0;130.0" and row["image_incidence"] == "55.0;58.0"
    assert "stereo partner" not in cov.suggestion


def test_an_image_without_partner_asks_for_one_from_the_other_side(coverage):
    cov = coverage.at(*POINTS["B"])
    assert ids(cov) == {"ESP_013000_1709"}, "one image; its COLOR product is not counted"
    assert cov.stereo == "" and cov.pairs == []
    assert "stereo partner for ESP_013000_1709 (emission ~17 deg from the west)" in cov.suggestion


def test_a_flagged_pair_with_enough_convergence_is_stereo_without_a_dtm(coverage):
    cov = coverage.at(*POINTS["C"])
    assert cov.stereo == "pair" and cov.dtm == []
    (pair,) = cov.pairs
    # looks from east (10 deg) and west (12 deg): the directions to the spacecraft part by ~22 deg
    assert pair.convergence_deg == pytest.approx(22.0, abs=0.5)


def test_two_flagged_images_from_the_same_side_are_no_pair(coverage):
    cov = coverage.at(*POINTS["D"])
    assert len(cov.observations) == 2 and cov.stereo == ""
    a, b = cov.observations
    assert convergence_deg(a, b) < 10.0
    assert "stereo partner" in cov.suggestion


def test_footprints_across_the_0_360_meridian(coverage):
    assert ids(coverage.at(*POINTS["E1"])) == {"ESP_016000_2100"}
    assert ids(coverage.at(*POINTS["E2"])) == {"ESP_016000_2100"}
    assert ids(coverage.at(POINTS["E2"][0], POINTS["E2"][1] - 360.0)) == {"ESP_016000_2100"}, "-180..180 input"
    assert ids(coverage.at(*POINTS["E3"])) == set()


def test_a_point_outside_every_footprint_has_empty_coverage(coverage):
    cov = coverage.at(*POINTS["OUT"])
    assert cov.observations == [] and cov.stereo == "" and cov.dtm == []
    assert cov.columns()["images"] == "" and cov.suggestion.startswith("first HiRISE image")


def test_the_floor_wants_a_lower_sun_than_any_image_had(coverage):
    # a skylight 40 m across and 40 m deep: half its floor is lit only below atan(0.5) = 26.6 deg
    assert floor_incidence_deg(40.0, 40.0) == pytest.approx(26.57, abs=0.01)
    cov = coverage.at(*POINTS["A"], diameter_m=40.0, depth_m=40.0)
    assert "lower incidence for the floor (i <= 27 deg; lowest so far 55)" in cov.suggestion
    assert "lower incidence" not in coverage.at(*POINTS["A"], diameter_m=400.0, depth_m=40.0).suggestion
    small = coverage.at(*POINTS["B"], diameter_m=3.0)  # 6 px at 0.5 m/px
    assert "full-resolution image" in small.suggestion


def test_a_query_against_a_full_sized_index_takes_milliseconds():
    """105 000 footprints (the archive's size in 2026): a point is answered well inside a second."""
    rng = np.random.default_rng(0)
    n = 105_000
    lat, lon = rng.uniform(-80, 80, n), rng.uniform(0, 360, n)
    d = np.array([0.03, 0.03, -0.03, -0.03])
    index = RdrIndex(
        observation_id=np.array([f"ESP_{i:06d}_0000" for i in range(n)]), product_id=np.array([f"ESP_{i:06d}_0000_RED" for i in range(n)]),
        start_time=np.full(n, "2012-01-01T00:00:00"), stereo_flag=np.zeros(n, bool), emission=np.full(n, 5.0),
        incidence=np.full(n, 50.0), phase=np.full(n, 55.0), sub_solar_azimuth=np.full(n, 135.0),
        north_azimuth=np.full(n, 270.0), solar_longitude=np.full(n, 90.0), map_scale=np.full(n, 0.25),
        lat_range=np.column_stack([lat - 0.03, lat + 0.03]), lon_range=np.column_stack([lon - 0.005, lon + 0.005]),
        corner_lat=lat[:, None] + d, corner_lon=(lon[:, None] + np.array([-0.005, 0.005, 0.005, -0.005])) % 360,
        sub_spacecraft=np.column_stack([lat, lon]))
    from al_loop.data.hirise_index import DtmIndex

    coverage = CoverageIndex(index, DtmIndex(np.array([], str), np.array([], str), np.array([], str)))
    start = time.perf_counter()
    hits = [coverage.at(float(lat[i]), float(lon[i])) for i in range(50)]
    per_query = (time.perf_counter() - start) / 50
    assert all(f"ESP_{i:06d}_0000" in ids(h) for i, h in enumerate(hits))
    assert per_query < 0.25, f"{per_query:.3f} s a query"
