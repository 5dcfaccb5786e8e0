"""Numbers a planetary scientist publishes from a pit map: each pit's size, shape and shadow
depth (``morphometry``, ``measure``, ``pit_measures``), the one-to-one match against a catalogue
(``compare``) and the field's exports (``exports``: JMARS, craterstats, size-frequency).

Below ``mapping`` (which makes the maps and calls these measures) and the CLI; pure numeric
code where it can be, files only at the edges.
"""
