"""An annotation session: the model, the image folder and the output folder
behind the page's requests (``server`` maps HTTP onto these methods).

Each prompt request decodes against the image's cached embedding
(``embeddings.EmbeddingStore``) and returns the candidates as PNGs. The
candidates stay here under a token: a refinement names the token it refines,
and that prediction's low-res logits go in as ``mask_input``, as in SAM's
interactive loop; accepting names the token and the candidate. Brush and
eraser strokes are applied here too (``masks.apply_strokes``), so the saved
mask is exactly what the page showed.

Requests that touch the model or the records hold one lock: they run one at
a time, in arrival order.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import threading
import time
import uuid

import numpy as np

from data_pipelines import storage
from samjax.annotate import masks as M
from samjax.annotate import prefill as P
from samjax.annotate.embeddings import EmbeddingStore
from samjax.annotate.image_folder import ImageFolder
from samjax.annotate.records import ImageRecord, make_annotation
from samjax.inference.mask_io import decode_rle
from samjax.inference.predictor import SamPredictor
from samjax.inference.sa1b_records import record_problem
from samjax.inference.transforms import postprocess_masks

# Predictions kept for refinement / accept / undo (per session, all images).
TOKENS_KEPT = 256


@dataclasses.dataclass
class Prediction:
  """Candidates of one request: masks [K, H, W] bool, low_res [K, 4h, 4w]
  logits (None for a stored mask being edited), scores [K]; stability [K]
  for a stored mask (a prediction's is computed when it is accepted)."""
  image: str
  masks: np.ndarray
  low_res: np.ndarray | None
  scores: np.ndarray
  stability: np.ndarray | None
  source: str = "manual"


@dataclasses.dataclass(frozen=True)
class SessionOptions:
  annotator: str = "anonymous"
  checkpoint: str = ""
  round_name: str = ""
  prefill: str | None = None              # None, "amg" or a detections JSON path
  prefill_points_per_side: int = 32
  prefill_min_score: float = 0.5


class AnnotationSession:

  def __init__(self, sam, folder: ImageFolder, out_dir: str, cache_dir: str,
               fingerprint: str, options: SessionOptions):
    self.sam, self.folder, self.out_dir, self.options = sam, folder, out_dir, options
    self.predictor = SamPredictor(sam)
    self._lock = threading.RLock()
    self._tokens: collections.OrderedDict[str, Prediction] = collections.OrderedDict()
    self._records: dict[str, ImageRecord] = {}
    self._detections = None
    if options.prefill not in (None, "amg"):
      self._detections = P.read_detections(options.prefill, folder.names,
                                           options.prefill_min_score)
    self.store = EmbeddingStore(self.predictor, folder.path, cache_dir, fingerprint,
                                after_embedding=self._prefill if options.prefill else None)

  # ---- images -------------------------------------------------------------
  def info(self) -> dict:
    """The image list with each image's object counts (from the files:
    images not opened yet are counted too)."""
    images = []
    for name in self.folder.names:
      rec = self._records.get(name)
      if rec is not None:
        count = len(rec.annotations)
      else:
        doc, problem = record_problem(self.record_path(name), name)
        count = None if problem else len(doc["annotations"]) if doc else 0
      images.append({"name": name, "objects": count,
                     "auto": len(P.AutoLayer(self.out_dir, name).pending())})
    return {"images": images, "annotator": self.options.annotator,
            "checkpoint": self.options.checkpoint, "round": self.options.round_name,
            "skipped": [dataclasses.asdict(s) for s in self.folder.skipped]}

  def record_path(self, name: str) -> str:
    return storage.join(self.out_dir, storage.splitext(name)[0] + ".json")

  def open(self, name: str) -> dict:
    """Starts (or reports) ``name``'s embedding; queues the next image's."""
    self.folder.path(name)
    entry = self.store.request(name)
    i = self.folder.index(name)
    if i + 1 < len(self.folder.names):  # prefetch: embedded after this one
      self.store.request(self.folder.names[i + 1], first=False)
    reply = {"image": name, "ready": entry.state == "ready", "state": entry.state,
             "elapsed": round(time.monotonic() - entry.started, 1), "error": entry.error,
             "cached": entry.cached}
    if entry.state == "ready":
      h, w = entry.decoded.rgb.shape[:2]
      reply.update(width=w, height=h)
    return reply

  def pixels(self, name: str) -> bytes:
    """The upright image as JPEG bytes (what the masks' frame is)."""
    from PIL import Image
    entry = self.store.get(name)
    buf = io.BytesIO()
    Image.fromarray(entry.decoded.rgb).save(buf, format="JPEG", quality=92)
    return buf.getvalue()

  def _record(self, name: str) -> ImageRecord:
    rec = self._records.get(name)
    if rec is None:
      h, w = self.store.get(name).decoded.rgb.shape[:2]
      rec = self._records[name] = ImageRecord(self.out_dir, name, h, w)
    return rec

  def objects(self, name: str) -> dict:
    with self._lock:
      rec, layer = self._record(name), P.AutoLayer(self.out_dir, name)
      shape = (rec.height, rec.width)
      pending = layer.pending()
      return {
          "objects": [_summary(a) for a in rec.annotations],
          "auto": [_summary(dict(o, source="auto")) for o in pending],
          "layer_png": M.layer_png(rec.masks(), shape),
          "auto_png": M.layer_png([layer.mask(o) for o in pending], shape, (M.AUTO,)),
      }

  # ---- prompts ------------------------------------------------------------
  def predict(self, name: str, points, labels, box, previous=None,
              previous_candidate=None, strokes=None) -> dict:
    start = time.perf_counter()
    strokes = M.check_strokes(strokes)
    coords, labels, box = _check_prompt(points, labels, box)
    with self._lock:
      entry = self.store.get(name)
      mask_input = None
      if previous:
        prev = self._token(previous, name)
        if prev.low_res is not None:
          k = int(previous_candidate or 0)
          mask_input = prev.low_res[k:k + 1]
      single_click = coords is not None and len(coords) == 1 and box is None
      multimask = single_click and mask_input is None
      self.predictor.use_embedded_image(entry.embedded)
      masks, scores, low = self.predictor.predict(coords, labels, box, mask_input,
                                                  multimask_output=multimask)
      pred = Prediction(name, masks, low, scores, None)
      token = self._keep(pred)
    reply = self._candidates(token, pred, strokes)
    reply["server_ms"] = round(1000 * (time.perf_counter() - start), 2)
    return reply

  def blank(self, name: str) -> dict:
    """An empty mask to paint on with the brush (an object no prompt gets);
    its predicted IoU and stability score are stored as 0."""
    with self._lock:
      h, w = self.store.get(name).decoded.rgb.shape[:2]
      pred = Prediction(name, np.zeros((1, h, w), bool), None, np.zeros(1), np.zeros(1))
      token = self._keep(pred)
    return self._candidates(token, pred, [])

  def render(self, name: str, token: str, candidate: int, strokes) -> dict:
    strokes = M.check_strokes(strokes)
    with self._lock:
      mask = M.apply_strokes(self._mask_of(token, name, candidate), strokes)
    return {"png": M.mask_png(mask), "area": int(mask.sum())}

  def edit(self, name: str, obj_id) -> dict:
    """Loads an accepted (int id) or pending auto ("auto-k") object into the editor."""
    with self._lock:
      if isinstance(obj_id, str):
        obj, source = P.AutoLayer(self.out_dir, name).find(obj_id), "auto"
      else:
        obj = self._record(name).find(int(obj_id))
        source = obj["source"]
      mask = decode_rle(obj["segmentation"])
      pred = Prediction(name, mask[None], None, np.array([obj["predicted_iou"]]),
                        np.array([obj["stability_score"]]), source)
      token = self._keep(pred)
    reply = self._candidates(token, pred, [])
    clicks = obj.get("clicks") or [[x, y, 1] for x, y in obj.get("point_coords", [])]
    reply.update(points=[c[:2] for c in clicks], labels=[int(c[2]) for c in clicks],
                 box=obj.get("box"), source=source)
    return reply

  # ---- objects ------------------------------------------------------------
  def accept(self, name: str, token: str, candidate: int, strokes, points, labels, box,
             seconds: float, interactions: int, replaces=None) -> dict:
    strokes = M.check_strokes(strokes)
    coords, labels, box = _check_prompt(points, labels, box, allow_empty=True)
    with self._lock:
      pred = self._token(token, name)
      mask = M.apply_strokes(self._mask_of(token, name, candidate), strokes)
      if not mask.any():
        raise ValueError("the mask is empty: nothing to accept")
      rec = self._record(name)
      layer = P.AutoLayer(self.out_dir, name)
      ann_id = rec.next_id()
      base = pred.source  # an edited stored mask: that object's source
      if isinstance(replaces, int):
        ann_id = rec.find(replaces)["id"]
        if pred.low_res is not None:
          base = rec.find(replaces)["source"]
      elif isinstance(replaces, str) and pred.low_res is not None:
        base = "auto"
      changed = bool(strokes) or pred.low_res is not None
      source = "auto-edited" if changed and base != "manual" else base
      clicks = [] if coords is None else [[x, y, int(lb)] for (x, y), lb in zip(coords, labels)]
      ann = make_annotation(
          ann_id, mask, predicted_iou=pred.scores[candidate],
          stability_score=self._stability(pred, int(candidate)), clicks=clicks,
          box=None if box is None else box[0].tolist(), strokes=len(strokes), source=source,
          seconds=seconds, interactions=interactions, annotator=self.options.annotator,
          checkpoint=self.options.checkpoint, round_name=self.options.round_name)
      self._put(name, rec, ann)
      if isinstance(replaces, str):
        layer.decide(replaces, "edited")
      reply = self.objects(name)
    reply["accepted"] = ann_id
    return reply

  def accept_auto(self, name: str, auto_id: str) -> dict:
    with self._lock:
      layer, rec = P.AutoLayer(self.out_dir, name), self._record(name)
      obj = layer.find(auto_id)
      clicks = [[x, y, 1] for x, y in obj["point_coords"]] if obj.get("box") is None else []
      ann = make_annotation(
          rec.next_id(), decode_rle(obj["segmentation"]), predicted_iou=obj["predicted_iou"],
          stability_score=obj["stability_score"], clicks=clicks, box=obj.get("box"),
          strokes=0, source="auto", seconds=0.0, interactions=0,
          annotator=self.options.annotator, checkpoint=self.options.checkpoint,
          round_name=self.options.round_name)
      self._put(name, rec, ann)
      layer.decide(auto_id, "accepted")
      return self.objects(name)

  def reject(self, name: str, auto_id: str) -> dict:
    with self._lock:
      P.AutoLayer(self.out_dir, name).decide(auto_id, "rejected")
      return self.objects(name)

  def delete(self, name: str, obj_id: int) -> dict:
    with self._lock:
      entry = self.store.get(name)
      self._record(name).delete(int(obj_id), self.folder.path(name), entry.decoded)
      return self.objects(name)

  def uncovered(self, name: str) -> dict:
    """The pixels no accepted object covers, tinted, and their fraction."""
    with self._lock:
      rec = self._record(name)
      covered = np.zeros((rec.height, rec.width), bool)
      for m in rec.masks():
        covered |= m
    return {"png": M.mask_png(~covered, M.UNCOVERED), "fraction": float((~covered).mean())}

  # ---- internals ----------------------------------------------------------
  def _stability(self, pred: Prediction, k: int) -> float:
    """The stability score of candidate ``k``: its logits upsampled to the
    image, as the predictor makes them (only at accept: a click's reply
    needs the masks alone)."""
    if pred.stability is not None:
      return float(pred.stability[k])
    e = self.store.get(pred.image).embedded
    logits = postprocess_masks(pred.low_res[k], e.input_size, e.original_size,
                               self.predictor.image_size)
    return M.stability_score(np.asarray(logits))

  def _put(self, name: str, rec: ImageRecord, ann: dict) -> None:
    rec.put(ann, self.folder.path(name), self.store.get(name).decoded)

  def _keep(self, pred: Prediction) -> str:
    token = uuid.uuid4().hex[:16]
    self._tokens[token] = pred
    while len(self._tokens) > TOKENS_KEPT:
      self._tokens.popitem(last=False)
    return token

  def _token(self, token: str, name: str) -> Prediction:
    pred = self._tokens.get(token)
    if pred is None or pred.image != name:
      raise KeyError(f"unknown or expired prediction {token!r} for {name}; prompt again")
    self._tokens.move_to_end(token)
    return pred

  def _mask_of(self, token: str, name: str, candidate) -> np.ndarray:
    pred = self._token(token, name)
    k = int(candidate)
    if not 0 <= k < len(pred.masks):
      raise ValueError(f"candidate {k} out of range (0..{len(pred.masks) - 1})")
    return pred.masks[k]

  def _candidates(self, token: str, pred: Prediction, strokes) -> dict:
    return {"token": token, "selected": int(np.argmax(pred.scores)),
            "candidates": [{"png": M.mask_png(M.apply_strokes(m, strokes)),
                            "score": float(s)} for m, s in zip(pred.masks, pred.scores)]}

  def _prefill(self, name: str, decoded, embedded) -> None:
    """Fills the auto layer of ``name`` once (runs in the embedding worker)."""
    layer = P.AutoLayer(self.out_dir, name)
    if layer.exists:
      return
    if self.options.prefill == "amg":
      objects = P.amg_objects(self.sam, decoded.rgb, self.options.prefill_points_per_side)
    else:
      def predict_boxes(boxes):
        with self._lock:
          self.predictor.use_embedded_image(embedded)
          logits, iou, _ = self.predictor.predict_batch(boxes=boxes, multimask_output=False,
                                                        return_logits=True)
        return (logits[:, 0] > 0.0, iou[:, 0],
                [M.stability_score(x) for x in logits[:, 0]])
      objects = P.box_objects(predict_boxes, self._detections.get(name, []))
    layer.fill(objects, self.options.prefill)


def _summary(a: dict) -> dict:
  return {"id": a["id"], "source": a.get("source", "auto"), "bbox": a["bbox"],
          "area": int(a["area"]), "predicted_iou": float(a["predicted_iou"])}


def _check_prompt(points, labels, box, allow_empty: bool = False):
  """(coords [N, 2] | None, labels [N] | None, box [1, 4] | None) of a request."""
  coords = np.asarray(points or [], np.float64).reshape(-1, 2)
  labels = np.asarray(labels or [], np.int64).reshape(-1)
  if len(coords) != len(labels) or not np.isin(labels, (0, 1)).all():
    raise ValueError("points and labels must pair up, labels 1 (foreground) or 0 (background)")
  if not np.isfinite(coords).all():
    raise ValueError("point coordinates must be finite")
  if box is not None:
    box = np.asarray(box, np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
      raise ValueError("box must be [x0, y0, x1, y1]")
    box = np.array([[min(box[0], box[2]), min(box[1], box[3]),
                     max(box[0], box[2]), max(box[1], box[3])]])
  if not len(coords) and box is None and not allow_empty:
    raise ValueError("give a point or a box")
  return (coords if len(coords) else None), (labels if len(labels) else None), box
