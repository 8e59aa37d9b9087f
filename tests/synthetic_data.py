"""A synthetic training batch (random pixels, rectangle masks) for tests and benchmarks.

Same layout as a ``data_pipelines`` batch, so the train step cannot tell the
difference; the masks are axis-aligned rectangles with matching boxes. Test
support, not part of the package: the sharding tests import it as
``tests.synthetic_data``, ``experiments/bench_train.py`` with the repository
root on its path.
"""

from __future__ import annotations

import numpy as np


def synthetic_batch(batch_size: int, max_masks: int, image_size: int, gt_size: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Returns a batch dict.

  Shapes: image [B, S, S, 3] uint8, masks [B, K, G, G] uint8 (a rectangle each),
  boxes [B, K, 4] float32 xyxy in the S frame, valid [B, K] bool (all True),
  image_size [B, 2] int32 (S, S: no padding).
  """
  b, k, s, g = batch_size, max_masks, image_size, gt_size
  rng = np.random.default_rng(seed)
  masks = np.zeros((b, k, g, g), np.uint8)
  boxes = np.zeros((b, k, 4), np.float32)
  for i in range(b):
    for j in range(k):
      y, x = rng.integers(0, g // 2, 2)
      h, w = rng.integers(4, g // 2, 2)
      masks[i, j, y:y + h, x:x + w] = 1
      boxes[i, j] = np.array([x, y, x + w, y + h]) * (s / g)
  image = rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8)
  return {"image": image, "masks": masks, "boxes": boxes,
          "valid": np.ones((b, k), bool), "image_size": np.full((b, 2), s, np.int32)}
