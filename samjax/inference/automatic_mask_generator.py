"""``SamAutomaticMaskGenerator``: SAM's fully automatic stage (the SA-1B data engine).

Same constructor, outputs and semantics as the official
``segment_anything.SamAutomaticMaskGenerator`` (grid of single-point prompts,
three ambiguity-aware masks each, predicted-IoU and stability filtering,
crop-edge filtering, box NMS within and across crops, optional small-region
clean-up), reorganised for speed:

- crops are embedded together through the encoder (``encoder_batch`` at a time);
- a crop's whole grid is decoded by one jitted program per
  ``points_per_batch`` points (prompts chunked inside, see ``SamModel.decode``);
- only masks that pass the IoU filter are upscaled to the crop frame, in
  fixed-size gathers, and only their stability score and box come back to
  the host (``amg_kernels.mask_stats``); NMS runs on device;
- full-resolution binary masks are made once, for the final survivors only;
  RLE and small-region removal are the only per-mask host work.

Every program's shape depends on the grid size and the crop's size class, so
one compilation serves all images of a class.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import time
from typing import Any

import jax
import numpy as np

from samjax.compile_cache import ensure_compile_cache
from samjax.decoding.interactive import InteractivePlan
from samjax.inference import amg_kernels as K
from samjax.inference import amg_utils as U
from samjax.inference import validation
from samjax.inference.mask_io import encode_rle
from samjax.inference.transforms import (
  apply_coords,
  get_preprocess_shape,
  normalize_and_pad_host,
  resize_longest_side,
)
from samjax.model.sam import SamModel

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclasses.dataclass
class _Masks:
  """Survivors of one image (or crop), parallel arrays; masks in crop frames."""
  masks: list[np.ndarray]        # [Hc, Wc] bool each, in its crop's frame
  boxes: np.ndarray              # [K, 4] int64 xyxy, image frame
  iou: np.ndarray                # [K] float32
  stability: np.ndarray          # [K] float32
  points: np.ndarray             # [K, 2] float64, image frame
  crop_boxes: np.ndarray         # [K, 4] int64 xyxy
  # Records give crop_box as floats (see _generate_masks).
  float_crop_box: bool = False

  def take(self, idx) -> _Masks:
    idx = np.asarray(idx, np.int64)
    return _Masks([self.masks[i] for i in idx], self.boxes[idx], self.iou[idx],
                  self.stability[idx], self.points[idx], self.crop_boxes[idx],
                  self.float_crop_box)

  @staticmethod
  def cat(parts: list[_Masks]) -> _Masks:
    if not parts:
      return _Masks([], np.zeros((0, 4), np.int64), np.zeros(0, np.float32),
                    np.zeros(0, np.float32), np.zeros((0, 2)), np.zeros((0, 4), np.int64))
    return _Masks(functools.reduce(operator.iadd, (p.masks for p in parts), []),
                  *(np.concatenate([getattr(p, f) for p in parts])
                    for f in ("boxes", "iou", "stability", "points", "crop_boxes")))


class SamAutomaticMaskGenerator:
  """Masks for everything in an image, from a grid of point prompts.

  >>> sam = samjax.load_sam("sam_vit_b_01ec64.pth")
  >>> records = SamAutomaticMaskGenerator(sam).generate(image)   # HxWx3 uint8
  >>> records[0].keys()  # segmentation, area, bbox, predicted_iou,
  ...                    # point_coords, stability_score, crop_box

  Arguments are the official ones (see its docstring) plus:
    points_per_batch: points decoded per jitted call (any positive int, as
      officially; each call is padded to whole ``prompt_chunk``s, see
      ``InteractivePlan.padded_batch``); larger is fewer dispatches but ~3*L*L*4 bytes
      of low-res logits per point on device. The records do not depend on
      it, bit for bit.
    encoder_batch: crops embedded per encoder call.
    prompt_chunk: prompts per step inside the decoder (cache-sized on CPU).
    compile_cache: turn jax's persistent compilation cache on unless it is
      already configured (``samjax.compile_cache.ensure_compile_cache``).
  ``min_mask_region_area`` uses scipy (no OpenCV needed).
  """

  def __init__(self, model, points_per_side: int | None = 32,
               points_per_batch: int = 64, pred_iou_thresh: float = 0.88,
               stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
               box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
               crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
               crop_n_points_downscale_factor: int = 1,
               point_grids: list[np.ndarray] | None = None,
               min_mask_region_area: int = 0, output_mode: str = "binary_mask",
               *, encoder_batch: int = 4, prompt_chunk: int = 4,
               compile_cache: bool = True):
    if compile_cache:
      ensure_compile_cache()
    if not hasattr(model, "params") or not hasattr(model, "model"):
      raise TypeError("SamAutomaticMaskGenerator takes the result of samjax.load_sam(...) "
                      f"(model + params), got {type(model).__name__}")
    if (points_per_side is None) == (point_grids is None):
      raise ValueError("give exactly one of points_per_side or point_grids")
    if output_mode not in OUTPUT_MODES:
      raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
    # NaN compares False with everything: a nan threshold would keep no mask
    # (or skip a filter) without a word.
    validation.check_finite_settings(
        pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
        stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
        crop_nms_thresh=crop_nms_thresh, crop_overlap_ratio=crop_overlap_ratio)
    if crop_n_layers < 0:
      raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
    if points_per_batch < 1:
      raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
    if prompt_chunk < 1:
      raise ValueError(f"prompt_chunk must be >= 1, got {prompt_chunk}")
    if points_per_side is not None:
      if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
      grids = U.build_all_layer_point_grids(points_per_side, crop_n_layers,
                                            crop_n_points_downscale_factor)
    else:
      grids = [np.asarray(g, np.float64).reshape(-1, 2) for g in point_grids]
      if len(grids) < crop_n_layers + 1:
        raise ValueError(f"point_grids has {len(grids)} grid(s); crop_n_layers="
                         f"{crop_n_layers} needs {crop_n_layers + 1} (one per layer)")
    for i, g in enumerate(grids):
      if len(g) == 0:
        raise ValueError(f"the point grid of crop layer {i} is empty (points_per_side "
                         "too small for crop_n_points_downscale_factor?)")
    self.model = model
    self._model: SamModel = model.model
    self._params = model.params
    self.point_grids = grids
    self.points_per_batch = int(points_per_batch)
    self.pred_iou_thresh = float(pred_iou_thresh)
    self.stability_score_thresh = float(stability_score_thresh)
    self.stability_score_offset = float(stability_score_offset)
    self.box_nms_thresh = float(box_nms_thresh)
    self.crop_n_layers = int(crop_n_layers)
    self.crop_nms_thresh = float(crop_nms_thresh)
    self.crop_overlap_ratio = float(crop_overlap_ratio)
    self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
    self.min_mask_region_area = min_mask_region_area
    self.output_mode = output_mode
    self.encoder_batch = int(encoder_batch)
    self.prompt_chunk = int(prompt_chunk)
    self._plan = InteractivePlan(self._model, self.prompt_chunk)
    self._image_pe = jax.jit(self._plan.image_pe)(self._params)
    # Seconds spent in each stage by the last generate() (benchmarks read it).
    self.last_timings: dict[str, float] = {}

  # ---- public -----------------------------------------------------------
  def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
    """HxWx3 uint8 RGB image -> one record per mask (official keys):
    segmentation (HxW bool, or RLE dict per ``output_mode``), area (int),
    bbox ([x, y, w, h]), predicted_iou, point_coords ([[x, y]]),
    stability_score, crop_box ([x, y, w, h]; ints, or floats exactly when
    the official gives floats: several crops, one of them without masks)."""
    image = validation.check_image(image, "RGB")
    t0 = time.perf_counter()
    data = self._generate_masks(image)
    if self.min_mask_region_area > 0:
      data = self._postprocess_small_regions(
          data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh))
    records = self._records(data, image.shape[:2])
    self.last_timings["total"] = time.perf_counter() - t0
    return records

  # ---- stages -----------------------------------------------------------
  def _generate_masks(self, image: np.ndarray) -> _Masks:
    orig_size = image.shape[:2]
    crop_boxes, layers = U.generate_crop_boxes(orig_size, self.crop_n_layers,
                                               self.crop_overlap_ratio)
    t0 = time.perf_counter()
    embeddings = self._embed_crops(image, crop_boxes)
    t1 = time.perf_counter()
    parts = [self._process_crop(image, emb, box, layer, orig_size)
             for emb, box, layer in zip(embeddings, crop_boxes, layers)]
    data = _Masks.cat(parts)
    # The official record types: crop boxes are an int tensor per crop, but
    # a crop without masks contributes torch.tensor([]) (float32), and
    # concatenating it promotes every crop box to float. Same here, so that
    # records (and the JSON / CSV written from them) are the official ones.
    data.float_crop_box = len(crop_boxes) > 1 and any(len(p.iou) == 0 for p in parts)
    if len(crop_boxes) > 1 and len(data.iou):
      # Prefer masks from smaller crops (official score: 1 / crop area).
      cb = data.crop_boxes
      area = ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])).astype(np.float32)
      keep = K.nms_host(data.boxes.astype(np.float32), np.float32(1.0) / area,
                        self.crop_nms_thresh)
      data = data.take(keep)
    self.last_timings = {"encoder": t1 - t0, "masks": time.perf_counter() - t1}
    return data

  def _embed_crops(self, image, crop_boxes) -> list:
    """One ``ImageState`` (of one image) per crop. The whole image is embedded
    alone; the crops in batches of exactly ``encoder_batch`` (zero-padded),
    so the encoder compiles for two batch sizes at most."""
    s = self._model.config.image_size

    def prep(box):
      x0, y0, x1, y1 = box
      crop = resize_longest_side(np.ascontiguousarray(image[y0:y1, x0:x1]), s)
      return normalize_and_pad_host(crop.transpose(2, 0, 1), s)

    embed = functools.partial(K.embed, self._params, image_pe=self._image_pe, plan=self._plan)
    out = embed(prep(crop_boxes[0])[None])
    rest, eb = crop_boxes[1:], self.encoder_batch
    for i in range(0, len(rest), eb):
      group = [prep(b) for b in rest[i:i + eb]]
      batch = np.zeros((eb, *group[0].shape), np.float32)
      batch[:len(group)] = group
      out.extend(embed(batch)[:len(group)])
    return jax.block_until_ready(out)

  def _process_crop(self, image, embedding, crop_box, layer: int, orig_size) -> _Masks:
    x0, y0, x1, y1 = crop_box
    crop_size = (y1 - y0, x1 - x0)
    s = self._model.config.image_size
    input_size = get_preprocess_shape(*crop_size, s)
    points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]
    coords = apply_coords(points, crop_size, s).astype(np.float32)
    low_size = 4 * self._model.config.embedding_size
    ops = K.upscale_operands(low_size, s, input_size, crop_size)
    k = K.gather_size(len(ops[2]), len(ops[3]))
    grid = K.crop_mask_grid(ops[0], ops[1], self._model.config.embedding_size)
    offset = np.float32(self.stability_score_offset)

    chunks, cand = [], []  # gathered logits on device; (chunk, row, flat index)
    iou_all, stab_all, box_all = [], [], []
    ppb = self.points_per_batch
    padded = self._plan.padded_batch(ppb)
    for start in range(0, len(coords), ppb):
      n = min(ppb, len(coords) - start)
      # Point p sits in slot p % prompt_chunk of its decoder chunk whatever the batch
      # size: XLA's CPU kernels round a prompt's logits differently by its
      # slot, so this is what makes the records independent of
      # points_per_batch, bit for bit.
      lead = self._plan.lead_slot(start)
      batch = np.zeros((padded, 2), np.float32)
      batch[lead:lead + n] = coords[start:start + n]
      low, iou = K.decode_points(self._params, embedding, batch, plan=self._plan,
                                 mask_grid=grid)
      iou = np.asarray(jax.device_get(iou))[3 * lead:3 * (lead + n)]
      idx = np.arange(3 * n)
      if self.pred_iou_thresh > 0.0:
        idx = idx[iou > np.float32(self.pred_iou_thresh)]
      for c in range(0, len(idx), k):
        sel = idx[c:c + k]
        pad = np.zeros(k, np.int32)
        pad[:len(sel)] = sel
        g, stab, boxes = K.mask_stats(low, pad + 3 * lead, *ops, offset)
        stab, boxes = jax.device_get((stab, boxes))
        chunks.append(g)
        cand.extend((len(chunks) - 1, r, start * 3 + int(j)) for r, j in enumerate(sel))
        iou_all.append(iou[sel])
        stab_all.append(stab[:len(sel)])
        box_all.append(boxes[:len(sel)])
      del low
    if not cand:
      return _Masks.cat([])
    cand = np.asarray(cand, np.int64)
    iou = np.concatenate(iou_all)
    stab = np.concatenate(stab_all)
    boxes = np.concatenate(box_all).astype(np.int64)

    keep = np.ones(len(cand), bool)
    if self.stability_score_thresh > 0.0:
      keep &= stab >= np.float32(self.stability_score_thresh)
    keep &= ~U.is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_size[1], orig_size[0]])
    sel = np.flatnonzero(keep)
    order = sel[K.nms_host(boxes[sel].astype(np.float32), iou[sel], self.box_nms_thresh)]

    masks = self._binary_masks(chunks, cand[order, :2], ops, k, crop_size)
    offset_xyxy = np.array([x0, y0, x0, y0], np.int64)
    return _Masks(masks, boxes[order] + offset_xyxy, iou[order], stab[order],
                  points[cand[order, 2] // 3] + np.array([x0, y0]),
                  np.tile(np.asarray(crop_box, np.int64), (len(order), 1)))

  @staticmethod
  def _binary_masks(chunks, where, ops, k, crop_size) -> list[np.ndarray]:
    """Crop-frame bool masks of the rows ``where`` [(chunk, row)], in order."""
    h, w = crop_size
    out: list = [None] * len(where)
    for c in np.unique(where[:, 0]) if len(where) else []:
      pos = np.flatnonzero(where[:, 0] == c)
      for s in range(0, len(pos), k):
        p = pos[s:s + k]
        idx = np.zeros(k, np.int32)
        idx[:len(p)] = where[p, 1]
        m = np.asarray(jax.device_get(K.binary_masks(chunks[c], idx, *ops)))
        for i, j in enumerate(p):
          out[j] = m[i, :h, :w]
    return out

  @staticmethod
  def _postprocess_small_regions(data: _Masks, min_area: int, nms_thresh: float
                                 ) -> _Masks:
    """Fills small holes, removes small islands, then NMS again preferring
    unchanged masks (official ``postprocess_small_regions``)."""
    if not data.masks:
      return data
    new_masks, scores = [], []
    for m in data.masks:
      m, changed_h = U.remove_small_regions(m, min_area, "holes")
      m, changed_i = U.remove_small_regions(m, min_area, "islands")
      new_masks.append(m)
      scores.append(float(not (changed_h or changed_i)))
    offsets = data.crop_boxes[:, [0, 1, 0, 1]]
    boxes = np.array([U.mask_to_box_xyxy(m) for m in new_masks], np.int64) + offsets
    # The official recomputes boxes on the uncropped mask, so an empty mask's
    # box is [0, 0, 0, 0] in the image frame, not the crop's origin.
    empty = np.array([not m.any() for m in new_masks])
    boxes[empty] = 0
    keep = K.nms_host(boxes.astype(np.float32), np.asarray(scores, np.float32), nms_thresh)
    out = data.take(keep)
    for n, i in enumerate(keep):
      if scores[i] == 0.0:
        out.masks[n] = new_masks[i]
        out.boxes[n] = boxes[i]
    return out

  def _records(self, data: _Masks, orig_size) -> list[dict[str, Any]]:
    h, w = orig_size
    records = []
    for i, crop_mask in enumerate(data.masks):
      cx0, cy0, cx1, cy1 = (int(v) for v in data.crop_boxes[i])
      if (cy1 - cy0, cx1 - cx0) == (h, w):
        mask = crop_mask
      else:
        mask = np.zeros((h, w), bool)
        mask[cy0:cy1, cx0:cx1] = crop_mask
      if self.output_mode == "binary_mask":
        seg = mask
      elif self.output_mode == "coco_rle":
        seg = encode_rle(mask)
      else:
        seg = U.mask_to_uncompressed_rle(mask)
      records.append({
          "segmentation": seg,
          "area": int(crop_mask.sum()),
          "bbox": U.box_xyxy_to_xywh(data.boxes[i]),
          "predicted_iou": float(data.iou[i]),
          "point_coords": [[float(v) for v in data.points[i]]],
          "stability_score": float(data.stability[i]),
          "crop_box": [float(v) for v in U.box_xyxy_to_xywh(data.crop_boxes[i])]
                      if data.float_crop_box else U.box_xyxy_to_xywh(data.crop_boxes[i]),
      })
    return records

