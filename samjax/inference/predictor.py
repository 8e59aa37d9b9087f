"""``SamPredictor``: compute the image embedding once, answer prompts fast.

API-compatible with the official ``segment_anything.SamPredictor``
(``set_image``, ``predict``, ``get_image_embedding``, ``reset_image``;
``predict_batch`` is the counterpart of ``predict_torch`` and takes
coordinates in the original image frame). Pre/post-processing is the
official one (``samjax.inference.transforms``).

Every decode runs one jitted program whose shapes depend only on buckets:
point counts and prompt counts are padded (``samjax.inference.buckets``)
with validity flags, so a session of clicks compiles once per bucket, not
once per click. Which prompt kinds are present (points / box / mask input)
is part of the program too: absent kinds cost nothing (no padded tokens, no
mask convolutions), at the price of at most 4 programs per bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import jax
import numpy as np

from samjax.compile_cache import ensure_compile_cache
from samjax.decoding.interactive import ImageState, InteractivePlan
from samjax.inference import validation
from samjax.inference.buckets import POINT_BUCKETS, PROMPT_BUCKETS, bucket
from samjax.inference.transforms import (
  apply_boxes,
  apply_coords,
  get_preprocess_shape,
  normalize_and_pad_host,
  postprocess_masks,
  resize_longest_side,
)
from samjax.model.prompts import Prompts
from samjax.model.sam import SamModel


@functools.partial(jax.jit, static_argnames=("plan", "multimask", "return_logits",
                                             "input_size", "original_size"))
def _decode(params, state: ImageState, coords, labels, point_valid, boxes, box_valid,
            masks, mask_valid, *, plan: InteractivePlan, multimask: bool,
            return_logits: bool, input_size: tuple[int, int],
            original_size: tuple[int, int]):
  """One image's ``ImageState``, P prompts -> (masks [P, K, H, W], iou [P, K],
  low-res [P, K, 4h, 4w])."""
  add = lambda x: None if x is None else x[None]
  prompts = Prompts(add(coords), add(labels), add(point_valid), add(boxes), add(box_valid),
                    add(masks), add(mask_valid))
  logits, iou = plan.decode(params, state, prompts, multimask)
  low_res, iou = logits[0], iou[0]
  full = postprocess_masks(low_res, input_size, original_size, plan.model.config.image_size)
  return (full if return_logits else full > 0.0), iou, low_res


def embed_for_decoding(plan: InteractivePlan, params, images, image_pe):
  """[B, 3, S, S] images, [h, w, C] ``plan.image_pe(params)`` -> (the
  official [B, C, h, w] embeddings, the plan's ``ImageState``): everything
  the predictor keeps per image, made by one program (one compile, one
  cache entry) at ``set_image``."""
  embeddings = plan.model.embed_images(params, images)
  return embeddings, plan.prepare(params, embeddings, image_pe)


@dataclasses.dataclass(frozen=True)
class EmbeddedImage:
  """Everything ``SamPredictor`` keeps for one image after ``set_image``:
  tools that move between images (``samjax annotate``) keep one per image
  and swap it in with ``use_embedded_image`` instead of embedding again.

  features: [1, C, h, w] (the official ``get_image_embedding``);
  state: the plan's ``ImageState``; original_size (H, W); input_size (h, w)
  of the resized image before padding.
  """
  features: jax.Array
  state: ImageState
  original_size: tuple[int, int]
  input_size: tuple[int, int]


# Prompts decoded together per step (InteractivePlan.prompt_chunk); buckets
# above 1 are multiples of it.
PROMPT_CHUNK = 4


class SamPredictor:
  """Interactive segmentation of one image with a cached embedding.

  >>> sam = samjax.load_sam("sam_vit_b_01ec64.pth")
  >>> predictor = SamPredictor(sam)
  >>> predictor.set_image(image)                       # HxWx3 uint8 RGB
  >>> masks, scores, logits = predictor.predict(
  ...     point_coords=np.array([[500, 375]]), point_labels=np.array([1]))
  """

  def __init__(self, sam_model, point_buckets: Sequence[int] = POINT_BUCKETS,
               prompt_buckets: Sequence[int] = PROMPT_BUCKETS, *,
               warmup: bool = False, compile_cache: bool = True):
    """
    Args:
      sam_model: a ``samjax.LoadedSam`` (from ``samjax.load_sam``).
      point_buckets, prompt_buckets: padded sizes (``samjax.inference.buckets``).
      warmup: at every ``set_image``, compile (or load from the compilation
        cache) the programs of the usual first prompts for that image size
        (``warm_up``), so the first click does not wait for XLA.
      compile_cache: turn jax's persistent compilation cache on unless it is
        already configured (``samjax.compile_cache.ensure_compile_cache``):
        a second process with the same model loads the compiled programs.
    """
    if not hasattr(sam_model, "params") or not hasattr(sam_model, "model"):
      raise TypeError("SamPredictor takes the result of samjax.load_sam(...) "
                      f"(model + params), got {type(sam_model).__name__}")
    if compile_cache:
      ensure_compile_cache()
    self.warmup = bool(warmup)
    self.model = sam_model
    self._model: SamModel = sam_model.model
    self._params = sam_model.params
    self._point_buckets = tuple(point_buckets)
    self._prompt_buckets = tuple(prompt_buckets)
    self._plan = InteractivePlan(self._model, PROMPT_CHUNK)
    self._embed = jax.jit(embed_for_decoding, static_argnums=0)
    self._prepare = jax.jit(self._plan.prepare)
    # The image positional encoding depends on params only: compute it once.
    self._image_pe = jax.jit(self._plan.image_pe)(self._params)
    self.reset_image()

  # ---- image ------------------------------------------------------------
  @property
  def image_size(self) -> int:
    return self._model.config.image_size

  def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
    """Embeds an HxWx3 uint8 image (resize longest side, normalise, pad)."""
    image = validation.check_image(image, image_format)
    self.set_transformed_image(resize_longest_side(image, self.image_size),
                               image.shape[:2])

  def set_transformed_image(self, transformed_image: np.ndarray,
                            original_image_size: tuple[int, int]) -> None:
    """Like the official ``set_torch_image``: an already resized HxWx3 uint8
    image whose longest side equals the model input size."""
    h, w = transformed_image.shape[:2]
    if max(h, w) != self.image_size or transformed_image.ndim != 3:
      raise ValueError(f"transformed image must be HxWx3 with longest side "
                       f"{self.image_size}, got {transformed_image.shape}")
    expected = get_preprocess_shape(*original_image_size, self.image_size)
    if (h, w) != expected:
      raise ValueError(f"transformed image {h}x{w} does not match original size "
                       f"{tuple(original_image_size)} (expected {expected})")
    self.reset_image()
    self.use_embedded_image(self._embed_transformed(transformed_image, original_image_size))
    if self.warmup:
      self.warm_up()

  # The prompts of an interactive session's first clicks: one point with
  # three masks, a refinement (two points + the previous mask, one mask),
  # a box (one mask).
  WARM_UP_PROMPTS = (
      dict(point_coords=[[0.0, 0.0]], point_labels=[1], multimask_output=True),
      dict(point_coords=[[0.0, 0.0], [1.0, 1.0]], point_labels=[1, 0],
           with_mask_input=True, multimask_output=False),
      dict(box=[0.0, 0.0, 1.0, 1.0], multimask_output=False),
  )

  def warm_up(self) -> float:
    """Runs ``WARM_UP_PROMPTS`` once on the current image (results thrown
    away) so their programs are compiled, or loaded from the compilation
    cache, before the user's first prompt. Returns the seconds it took."""
    self._require_image()
    start = time.perf_counter()
    low = self._model.config.mask_input_size
    for prompt in self.WARM_UP_PROMPTS:
      kw = {k: np.asarray(v) if isinstance(v, list) else v for k, v in prompt.items()
            if k != "with_mask_input"}
      if prompt.get("with_mask_input"):
        kw["mask_input"] = np.zeros((1, low, low), np.float32)
      self.predict(**kw)
    return time.perf_counter() - start

  def embed(self, image: np.ndarray, image_format: str = "RGB") -> EmbeddedImage:
    """``set_image``'s work without making it the current image: the
    ``EmbeddedImage`` of an HxWx3 uint8 image (a tool that prepares the next
    image while the current one is in use calls this from another thread)."""
    image = validation.check_image(image, image_format)
    return self._embed_transformed(resize_longest_side(image, self.image_size),
                                   image.shape[:2])

  def _embed_transformed(self, transformed_image: np.ndarray,
                         original_image_size: tuple[int, int]) -> EmbeddedImage:
    h, w = transformed_image.shape[:2]
    chw = np.ascontiguousarray(transformed_image.transpose(2, 0, 1))[None]
    x = normalize_and_pad_host(chw, self.image_size)
    features, state = self._embed(self._plan, self._params, x, self._image_pe)
    return EmbeddedImage(features, state,
                         (int(original_image_size[0]), int(original_image_size[1])), (h, w))

  def embedded_image(self) -> EmbeddedImage:
    """The current image's embedding and decoding state (see ``EmbeddedImage``)."""
    self._require_image()
    return EmbeddedImage(self.features, self._state, self.original_size, self.input_size)

  def use_embedded_image(self, image: EmbeddedImage) -> None:
    """Makes ``image`` (from ``embedded_image`` or ``embedded_image_from_features``)
    the current image, without running the encoder."""
    self.features, self._state = image.features, image.state
    self.original_size, self.input_size = image.original_size, image.input_size
    self.is_image_set = True

  def embedded_image_from_features(self, features: np.ndarray,
                                   original_size: tuple[int, int]) -> EmbeddedImage:
    """An ``EmbeddedImage`` from a stored ``get_image_embedding`` [1, C, h, w]
    of an image of ``original_size`` (H, W) (e.g. an on-disk cache)."""
    cfg = self._model.config
    expected = (1, cfg.prompt_embed_dim, cfg.embedding_size, cfg.embedding_size)
    if tuple(features.shape) != expected:
      raise ValueError(f"embedding of shape {tuple(features.shape)} does not fit this "
                       f"model (expects {expected})")
    features = jax.numpy.asarray(features, jax.numpy.float32)
    hw = (int(original_size[0]), int(original_size[1]))
    return EmbeddedImage(features, self._prepare(self._params, features, self._image_pe), hw,
                         get_preprocess_shape(*hw, self.image_size))

  def get_image_embedding(self) -> np.ndarray:
    """The cached embedding, [1, C, h, w] (C=256, h=w=64 for SAM)."""
    self._require_image()
    return np.asarray(self.features)

  def reset_image(self) -> None:
    self.is_image_set = False
    self.features = None
    self._state = None
    self.original_size = None
    self.input_size = None

  def _require_image(self):
    if not self.is_image_set:
      raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

  # ---- prompts ----------------------------------------------------------
  def predict(self, point_coords: np.ndarray | None = None,
              point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
              mask_input: np.ndarray | None = None, multimask_output: bool = True,
              return_logits: bool = False):
    """One prompt (official semantics and argument conventions).

    Args:
      point_coords: Nx2 (x, y) pixels in the original image frame (points
        outside the image are taken, as officially).
      point_labels: N labels, 1 foreground / 0 background / -1 not a point
        (official padding: coordinates ignored).
      box: length-4 or 1x4 (x0, y0, x1, y1).
      mask_input: 1x256x256 low-res logits from a previous call.
      multimask_output: 3 masks (ambiguity-aware) if True, else 1.
      return_logits: return mask logits instead of booleans.
    Returns:
      masks CxHxW (bool, or float32 logits), iou_predictions C,
      low_res_logits Cx256x256.
    """
    self._require_image()
    ms = self._model.config.mask_input_size
    if point_coords is None and box is None and mask_input is None:
      raise ValueError("give at least one prompt: point_coords, box or mask_input")
    coords = labels = None
    if point_coords is not None:
      coords, labels = validation.check_points(point_coords, point_labels, batched=False)
      coords, labels = coords[None], labels[None]
    elif point_labels is not None:
      raise ValueError("point_labels given without point_coords")
    if box is not None:
      box = validation.check_boxes(box, batched=False)[None]
    if mask_input is not None:
      mask_input = validation.check_mask_input(mask_input, ms, batched=False)[None]
    validation.check_some_prompt(labels, [box is not None], [mask_input is not None])
    masks, iou, low = self._predict(coords, labels, box, mask_input, 1,
                                    multimask_output, return_logits)
    return masks[0], iou[0], low[0]

  def predict_batch(self, point_coords: np.ndarray | None = None,
                    point_labels: np.ndarray | None = None,
                    boxes: np.ndarray | None = None,
                    mask_input: np.ndarray | None = None,
                    multimask_output: bool = True, return_logits: bool = False,
                    *, transformed: bool = False):
    """B prompts for the current image in one call (cf. official ``predict_torch``).

    Args:
      point_coords: BxNx2 (x, y) in the original image; point_labels BxN
        (1 / 0 / -1 as in ``predict``; -1 pads prompts with fewer points).
      boxes: Bx4; mask_input: Bx1x256x256.
      transformed: coordinates and boxes are already in the resized model
        input frame (``ResizeLongestSide`` applied), as the official
        ``predict_torch`` takes them.
    Returns:
      masks BxCxHxW, iou_predictions BxC, low_res_logits BxCx256x256.
    """
    self._require_image()
    ms = self._model.config.mask_input_size
    if point_coords is None and boxes is None and mask_input is None:
      raise ValueError("give at least one prompt: point_coords, boxes or mask_input")
    counts = set()
    coords = labels = None
    if point_coords is not None:
      coords, labels = validation.check_points(point_coords, point_labels, batched=True)
      counts.add(coords.shape[0])
    elif point_labels is not None:
      raise ValueError("point_labels given without point_coords")
    if boxes is not None:
      boxes = validation.check_boxes(boxes, batched=True)
      counts.add(boxes.shape[0])
    if mask_input is not None:
      mask_input = validation.check_mask_input(mask_input, ms, batched=True)
      counts.add(mask_input.shape[0])
    if len(counts) != 1:
      raise ValueError("point_coords, boxes and mask_input must describe the same number "
                       f"of prompts B; got leading sizes {sorted(counts)}")
    b = counts.pop()
    validation.check_some_prompt(labels, np.full(b, boxes is not None),
                                 np.full(b, mask_input is not None))
    return self._predict(coords, labels, boxes, mask_input, b,
                         multimask_output, return_logits, transformed)

  def _predict(self, coords, labels, boxes, mask_input, b, multimask_output,
               return_logits, transformed: bool = False):
    """Validated [B, ...] prompts (original frame unless ``transformed``) ->
    padded, jitted decode."""
    hw, s = self.original_size, self.image_size
    if not transformed:
      coords = None if coords is None else apply_coords(coords, hw, s)
      boxes = None if boxes is None else apply_boxes(boxes, hw, s)
    return decode_prompts(
        self._plan, self._params, self._state, coords, labels, boxes, mask_input, b,
        input_size=self.input_size, original_size=hw,
        multimask_output=multimask_output, return_logits=return_logits,
        point_buckets=self._point_buckets, prompt_buckets=self._prompt_buckets)


def decode_prompts(plan: InteractivePlan, params, state: ImageState, coords, labels, boxes,
                   mask_input, b: int, *, input_size: tuple[int, int],
                   original_size: tuple[int, int], multimask_output: bool,
                   return_logits: bool, point_buckets: Sequence[int] = POINT_BUCKETS,
                   prompt_buckets: Sequence[int] = PROMPT_BUCKETS):
  """B validated prompts for one embedded image, already in the model input
  frame -> padded to buckets, one jitted decode, sliced back on the host.

  Args:
    state: ``plan.prepare`` of one image.
    coords: [B, N, 2] or None; labels: [B, N] int or None; boxes: [B, 4] or
      None; mask_input: [B, 1, 4h, 4w] or None (at least one is given).
    input_size: (h, w) of the resized image before padding; original_size:
      (H, W) the masks are returned at.
  Returns:
    masks [B, K, H, W] (bool, or float32 logits), iou [B, K] float32,
    low-res logits [B, K, 4h, 4w] float32 (numpy).
  """
  ms = plan.model.config.mask_input_size
  pb = bucket(b, prompt_buckets)
  n = coords.shape[1] if coords is not None else 1
  nb = bucket(n, point_buckets)

  c_in = l_in = pv = b_in = bv = m_in = mv = None
  if coords is not None:
    c_in = np.zeros((pb, nb, 2), np.float32)
    l_in = np.zeros((pb, nb), np.int32)
    pv = np.zeros((pb, nb), bool)
    c_in[:b, :n] = coords
    l_in[:b, :n] = labels
    pv[:b, :n] = True
  if boxes is not None:
    b_in = np.zeros((pb, 4), np.float32)
    bv = np.arange(pb) < b
    b_in[:b] = boxes
  if mask_input is not None:
    m_in = np.zeros((pb, ms, ms), np.float32)
    mv = np.arange(pb) < b
    m_in[:b] = mask_input[:, 0]

  masks, iou, low = _decode(
      params, state, c_in, l_in, pv, b_in, bv, m_in, mv, plan=plan,
      multimask=bool(multimask_output),
      return_logits=bool(return_logits), input_size=tuple(input_size),
      original_size=tuple(original_size))
  # Slice on the host: slicing device arrays would dispatch extra programs.
  masks, iou, low = jax.device_get((masks, iou, low))
  return masks[:b], iou[:b].astype(np.float32), low[:b].astype(np.float32)
