"""From a pit map to a target list: candidates with chips, what HiRISE already holds over each
(coverage from the archive's cumulative index), a page to review them and HiWish rows."""
