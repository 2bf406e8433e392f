"""The colours that tell pieces apart: parts in a preview, a rig's chains in its overlay.

One list, so that part 0 and a rig's first chain are the same red everywhere. Integers:
each user takes them in the float type it computes in.
"""

from __future__ import annotations

import numpy as np

PALETTE = np.array(
    [
        [230, 97, 75], [75, 150, 230], [105, 195, 95], [240, 190, 60], [170, 110, 210],
        [60, 200, 200], [240, 130, 180], [150, 150, 90], [95, 110, 130], [220, 160, 120],
    ],
    dtype=np.uint8,
)  # fmt: skip
