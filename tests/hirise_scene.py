"""A small HiRISE archive for tests: cumulative RDR and DTM indexes in the archive's layout (written
by ``al_loop.data.hirise_index.write_index``) holding footprints laid out around the sample
product, and an HTTP server on loopback that serves it as the PDS archive does.

Points and what covers them (``SCENE``):

* ``A`` (the sample product's centre): the DTM pair ``L``/``R`` (a DTM lists both), and
  ``ROT``'s min/max box but not ``ROT`` itself (a diagonal strip passing 800 m away);
* ``B``: ``SOLO`` alone (no stereo partner; its COLOR product is in the index too);
* ``C``: ``P1`` (flagged stereo) and ``P2``, looking from opposite sides (a pair, no DTM);
* ``D``: ``N1`` and ``N2``, both flagged, looking from nearly the same side (too little convergence);
* ``E1``/``E2``: either side of the 0/360 meridian inside ``SEAM``; ``E3`` just outside it;
* ``OUT``: nothing.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from al_loop.data.hirise_index import DTM_LAYOUT, DTM_RECORD_BYTES, DTM_STEM, RDR_STEM, write_index
from al_loop.data.sample_products import SAMPLE_CENTRE

R = 3_396_190.0
ALTITUDE_M = 280_000.0  # MRO's, near enough: where the sub-spacecraft point lies for an emission
A = SAMPLE_CENTRE  # (lat, east lon)
POINTS = {"A": A, "B": (-8.9, 239.3), "C": (-9.0, 239.3), "D": (-9.1, 239.3), "E1": (10.0, 0.003),
          "E2": (10.0, 359.996), "E3": (10.0, 0.02), "OUT": (30.0, 100.0)}
DTM_ID = "DTEEC_011000_1710_011100_1710_A01"


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """A point ``east_m``/``north_m`` metres from (lat, lon) (flat approximation, fine over km)."""
    return lat + math.degrees(north_m / R), (lon + math.degrees(east_m / (R * math.cos(math.radians(lat))))) % 360.0


def strip(centre: tuple[float, float], length_m: float, width_m: float, heading_deg: float,
          shift_m: tuple[float, float] = (0.0, 0.0)) -> list[tuple[float, float]]:
    """The four corners (lat, lon) of a ``length_m`` x ``width_m`` strip whose long axis points to
    ``heading_deg`` (compass), centred ``shift_m`` (east, north) from ``centre``, in order around it."""
    h = math.radians(heading_deg)
    along, across = (math.sin(h), math.cos(h)), (math.cos(h), -math.sin(h))
    corners = []
    for sa, sc in ((1, -1), (1, 1), (-1, 1), (-1, -1)):
        e = shift_m[0] + sa * length_m / 2 * along[0] + sc * width_m / 2 * across[0]
        n = shift_m[1] + sa * length_m / 2 * along[1] + sc * width_m / 2 * across[1]
        corners.append(offset(*centre, e, n))
    return corners


def rdr_row(observation: str, corners: list[tuple[float, float]], emission: float, look_azimuth: float, *,
            incidence: float = 50.0, stereo: bool = False, kind: str = "RED", scale: float = 0.25,
            date: str = "2009-01-01", ls: float = 100.0) -> dict:
    """One index row; the sub-spacecraft point is placed where ``emission`` seen from the footprint's
    centre towards ``look_azimuth`` (compass) puts it."""
    lat0 = sum(c[0] for c in corners) / 4
    lon0 = math.degrees(math.atan2(sum(math.sin(math.radians(c[1])) for c in corners),
                                   sum(math.cos(math.radians(c[1])) for c in corners))) % 360.0
    distance = ALTITUDE_M * math.tan(math.radians(emission))
    a = math.radians(look_azimuth)
    sub_lat, sub_lon = offset(lat0, lon0, distance * math.sin(a), distance * math.cos(a))
    row = {"VOLUME_ID": "MROHR_0001", "INSTRUMENT_HOST_ID": "MRO", "INSTRUMENT_ID": "HIRISE",
           "OBSERVATION_ID": observation, "PRODUCT_ID": f"{observation}_{kind}", "TARGET_NAME": "MARS",
           "START_TIME": f"{date}T12:00:00.000", "EMISSION_ANGLE": emission, "INCIDENCE_ANGLE": incidence,
           "PHASE_ANGLE": incidence + emission, "NORTH_AZIMUTH": 270.0, "SUB_SOLAR_AZIMUTH": 135.0,
           "SUB_SPACECRAFT_LATITUDE": sub_lat, "SUB_SPACECRAFT_LONGITUDE": sub_lon, "SOLAR_LONGITUDE": ls,
           "STEREO_FLAG": "YES" if stereo else "NO", "MAP_SCALE": scale,
           "MINIMUM_LATITUDE": min(c[0] for c in corners), "MAXIMUM_LATITUDE": max(c[0] for c in corners),
           "MINIMUM_LONGITUDE": min(c[1] for c in corners), "MAXIMUM_LONGITUDE": max(c[1] for c in corners),
           "MAP_PROJECTION_TYPE": "EQUIRECTANGULAR"}
    for k, (lat, lon) in enumerate(corners, start=1):
        row[f"CORNER{k}_LATITUDE"], row[f"CORNER{k}_LONGITUDE"] = lat, lon
    return row


def scene_rows() -> list[dict]:
    P = POINTS
    return [
        rdr_row("ESP_011000_1710", strip(A, 6000, 1200, 8), 5.0, 90.0, stereo=True, incidence=55.0),
        rdr_row("ESP_011100_1710", strip(A, 6000, 1200, 10, (100, 0)), 18.0, 270.0, stereo=True, incidence=58.0,
                date="2009-03-01", ls=130.0),
        rdr_row("ESP_012000_1710", strip(A, 6000, 300, 45, (566, -566)), 2.0, 90.0, incidence=20.0),
        rdr_row("ESP_013000_1709", strip(P["B"], 6000, 1200, 8), 3.0, 90.0, incidence=60.0, scale=0.5),
        rdr_row("ESP_013000_1709", strip(P["B"], 6000, 600, 8), 3.0, 90.0, incidence=60.0, kind="COLOR"),
        rdr_row("ESP_014000_1709", strip(P["C"], 6000, 1200, 8), 10.0, 90.0, stereo=True),
        rdr_row("ESP_014100_1709", strip(P["C"], 6000, 1200, 8), 12.0, 270.0),
        rdr_row("ESP_015000_1709", strip(P["D"], 6000, 1200, 8), 10.0, 90.0, stereo=True),
        rdr_row("ESP_015100_1709", strip(P["D"], 6000, 1200, 8), 14.0, 95.0, stereo=True),
        rdr_row("ESP_016000_2100", strip((10.0, 359.9995), 6000, 1500, 0), 1.0, 0.0),
    ]


def dtm_rows() -> list[dict]:
    return [{"VOLUME_ID": "MROHR_0001", "PRODUCT_ID": DTM_ID, "TARGET_NAME": "MARS",
             "LEFT_OBSERVATION_ID": "ESP_011000_1710", "RIGHT_OBSERVATION_ID": "ESP_011100_1710"}]


def write_archive(root: Path, rows: list[dict] | None = None) -> Path:
    """``root/PDS/INDEX/{RDR,DTM}CUMINDEX.{LBL,TAB}`` as the archive lays them out (:func:`serve`'s
    base URL is ``/PDS/``); returns the INDEX folder."""
    index = root / "PDS" / "INDEX"
    write_index(index, RDR_STEM, scene_rows() if rows is None else rows)
    write_index(index, DTM_STEM, dtm_rows(), DTM_LAYOUT, DTM_RECORD_BYTES)
    return index


class _Quiet(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and Content-Length, as the archive answers

    def log_message(self, *args) -> None:
        self.server.requests.append((self.command, self.path))


@contextmanager
def serve(root: Path):
    """An HTTP server on loopback serving ``root``; yields its base URL. ``server.requests`` logs
    (method, path) of every request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/PDS/", server
    finally:
        server.shutdown()
        server.server_close()
