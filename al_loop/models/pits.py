"""What counts as a pit in the decoder's probabilities: one rule for evaluation, pre-annotation
and the map. Plain numbers, no torch: the command line reads them without loading a model."""
from __future__ import annotations

THRESHOLD = 0.5  # a pixel is pit where the decoder's probability reaches this
# Floor for a component to count as a pit, in pixels of the original tile.
MIN_COMPONENT_PX = 9


def min_object_pixels(size: tuple[int, int], grid: int, cells: float = 2.0) -> int:
    """Smallest component that counts as a pit: ``cells`` embedding cells' area.

    The decoder paints one 8x8 patch per embedding cell, so blobs smaller than a couple
    of cells are speckle at its resolution, not pits it resolved (on HiRISE tiles of
    900 px, one cell is ~14 px across).
    """
    cell = max(size) / grid
    return max(MIN_COMPONENT_PX, int(round(cells * cell * cell)))
