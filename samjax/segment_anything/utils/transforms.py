"""``ResizeLongestSide``: the official transform class over samjax's numpy
transforms (``samjax.inference.transforms``, same rounding and resampling);
the ``*_torch`` methods take and return torch tensors."""

from __future__ import annotations

from copy import deepcopy

import numpy as np

from samjax.inference import transforms as T
from samjax.segment_anything import tensors


class ResizeLongestSide:
  """Resizes images so the longest side is ``target_length`` and maps
  coordinates and boxes into that frame (numpy and batched torch)."""

  def __init__(self, target_length: int) -> None:
    self.target_length = target_length

  def apply_image(self, image: np.ndarray) -> np.ndarray:
    """HxWxC uint8 -> resized HxWxC uint8 (PIL bilinear, as officially)."""
    # A writable copy, as officially (torch.as_tensor warns on read-only arrays).
    return np.array(T.resize_longest_side(np.asarray(image), self.target_length))

  def apply_coords(self, coords: np.ndarray, original_size) -> np.ndarray:
    """[..., 2] (x, y) in the (H, W) ``original_size`` image -> float64 resized frame."""
    return T.apply_coords(coords, tuple(original_size), self.target_length)

  def apply_boxes(self, boxes: np.ndarray, original_size) -> np.ndarray:
    """Bx4 (or 4) xyxy boxes -> Bx4 float64 in the resized frame."""
    boxes = np.asarray(boxes)
    return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

  def apply_image_torch(self, image):
    """BxCxHxW float torch images -> resized (bilinear with antialiasing; may
    differ slightly from ``apply_image``, which is what the model expects)."""
    from torch.nn import functional as F
    # The official method reads the size from shape[0], shape[1] (batch and
    # channels); the spatial size is what it means.
    target = self.get_preprocess_shape(image.shape[-2], image.shape[-1], self.target_length)
    return F.interpolate(image, target, mode="bilinear", align_corners=False,
                         antialias=True)

  def apply_coords_torch(self, coords, original_size):
    """[..., 2] torch (x, y) -> float32 torch in the resized frame (numpy in,
    float32 numpy out)."""
    old_h, old_w = original_size
    new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
    if tensors.is_torch(coords):
      coords = deepcopy(coords).to(tensors.torch_module().float)
    else:
      coords = np.array(coords, np.float32, copy=True)
    coords[..., 0] = coords[..., 0] * (new_w / old_w)
    coords[..., 1] = coords[..., 1] * (new_h / old_h)
    return coords

  def apply_boxes_torch(self, boxes, original_size):
    """Bx4 torch boxes -> Bx4 float32 torch in the resized frame."""
    return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

  @staticmethod
  def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side ``long_side_length`` (official rounding)."""
    return T.get_preprocess_shape(oldh, oldw, long_side_length)
