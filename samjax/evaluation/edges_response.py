"""Edge response of a set of masks: Sobel on probabilities, kept on mask boundaries.

The SAM paper's recipe (appendix D.2): "apply a Sobel filter to the
remaining masks' unthresholded probability maps and set values to zero if
they do not intersect with the outer boundary pixels of a mask. Finally,
take a pixel-wise max over all the predictions". Concretely, per mask:

  p    = sigmoid(logits)                       the probability map, [H, W]
  g    = |Sobel(p)| = sqrt(gx^2 + gy^2)        3x3 kernels [1 2 1] x [-1 0 1]
  band = dilate3x3(m) & ~erode3x3(m)           m = logits > 0 (the mask)
  edge = g * band

and the response is the max of ``edge`` over the masks. ``band`` is our
reading of "the outer boundary pixels of a mask": the pixels whose 3x3
neighbourhood holds both mask and background, i.e. the 1-pixel rings just
inside and just outside the mask's outline (holes included), which hold the
Sobel ridge of the 0.5 crossing. Borders replicate the edge pixel (for
Sobel, dilation and erosion alike), so the image border is never a mask
boundary. The official implementation is not public: these are choices.

Runs on the accelerator (jitted, one program per mask count and image size).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _neighbours(x):
  """[K, H, W] -> the 9 shifted copies [9, K, H, W] of each 3x3 neighbourhood
  (edge-replicated border), row-major from the top-left."""
  h, w = x.shape[-2:]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
  return jnp.stack([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)])


def sobel_magnitude(prob):
  """[K, H, W] -> [K, H, W] Sobel gradient magnitude (replicated border)."""
  n = _neighbours(prob)
  gx = (n[2] + 2 * n[5] + n[8]) - (n[0] + 2 * n[3] + n[6])
  gy = (n[6] + 2 * n[7] + n[8]) - (n[0] + 2 * n[1] + n[2])
  return jnp.sqrt(gx * gx + gy * gy)


def boundary_band(mask):
  """[K, H, W] bool -> pixels whose 3x3 neighbourhood has both values."""
  n = _neighbours(mask)
  return n.any(axis=0) & ~n.all(axis=0)


@jax.jit
def masks_edge_response(logits, keep):
  """Max over the kept masks of their boundary-gated Sobel response.

  Args:
    logits: [K, H, W] mask logits at the image resolution.
    keep: [K] bool; masks with False contribute nothing (padding, NMS).
  Returns:
    [H, W] float32 >= 0.
  """
  logits = logits.astype(jnp.float32)
  edge = sobel_magnitude(jax.nn.sigmoid(logits)) * boundary_band(logits > 0.0)
  edge = jnp.where(keep[:, None, None], edge, 0.0)
  return edge.max(axis=0)
