"""The expert's progress report: one static page (``index.html`` with its images beside it) of
where a workspace's loop stands. It reads the workspace (status, curve, rounds, decoders, the
maps and candidate lists recorded there) and talks to no Label Studio server; it opens from a
file, with no internet.

``plots`` draws the figures, ``page`` writes the page; :func:`write_report` does both.
"""
from al_loop.report.page import write_report

__all__ = ["write_report"]
