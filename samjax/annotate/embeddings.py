"""Image embeddings for an annotation session: computed once per image, in
the background, kept in memory and on disk.

One worker thread embeds images one at a time, the image the page asked for
first, then the one after it (prefetch), so that moving to the next image
rarely waits. Each embedding is saved under the cache folder, named by a
hash of the model's weights, the image's bytes and the input size: coming
back to an image, in this session or the next, skips the encoder. A cached
file that does not load is recomputed.

The worker runs beside the requests that decode prompts: on a CPU they share
its cores while it runs.
"""

from __future__ import annotations

import collections
import hashlib
import io
import threading
import time
from collections.abc import Callable

import jax
import numpy as np

from data_pipelines import atomic_io, storage
from samjax.inference.image_io import decode_image_file
from samjax.inference.predictor import EmbeddedImage, SamPredictor

# Embedded images kept in memory (ViT-B: ~20 MB each with the decoding state).
MEMORY_SLOTS = 24


def weights_fingerprint(params) -> str:
  """sha256 of every parameter's bytes, in tree order (names the model in
  cache keys: the same weights give the same embeddings, whatever file they
  came from)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return digest.hexdigest()


class _Entry:
  def __init__(self):
    self.state = "queued"  # queued -> embedding -> (prefilling ->) ready | error
    self.error: str | None = None
    self.started = time.monotonic()
    self.decoded = None
    self.embedded: EmbeddedImage | None = None
    self.cached = False
    self.done = threading.Event()


class EmbeddingStore:
  """Per-image ``EmbeddedImage``s of ``predictor`` for the files ``path_of`` names.

  ``after_embedding(name, decoded, embedded)`` (optional) runs in the worker
  after an image is embedded, before it is reported ready (the pre-fill).
  """

  def __init__(self, predictor: SamPredictor, path_of: Callable[[str], str], cache_dir: str,
               fingerprint: str, after_embedding=None):
    self.predictor, self.path_of = predictor, path_of
    self.cache_dir, self.fingerprint = cache_dir, fingerprint
    self.after_embedding = after_embedding
    storage.makedirs(cache_dir)
    self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
    self._queue: list[str] = []
    self._lock = threading.Condition()
    self._worker = threading.Thread(target=self._run, name="embedder", daemon=True)
    self._worker.start()

  def request(self, name: str, *, first: bool = True) -> _Entry:
    """The entry of ``name``, queued for embedding if not done (at the front
    of the queue when ``first``, else at the back: a prefetch). An unknown
    name is a ``KeyError`` (``path_of``'s)."""
    self.path_of(name)
    with self._lock:
      entry = self._entries.get(name)
      if entry is None:
        entry = self._entries[name] = _Entry()
      self._entries.move_to_end(name)
      if entry.state == "queued":
        if name in self._queue:
          self._queue.remove(name)
        self._queue.insert(0 if first else len(self._queue), name)
        self._lock.notify()
      self._evict()
      return entry

  def get(self, name: str, timeout: float | None = None) -> _Entry:
    """``name``'s entry once embedded (blocks); raises ``ValueError`` with the
    reason if the image could not be read."""
    entry = self.request(name)
    if not entry.done.wait(timeout):
      raise TimeoutError(f"{name} is still being embedded")
    if entry.state == "error":
      raise ValueError(entry.error)
    return entry

  def _evict(self):
    ready = [n for n, e in self._entries.items() if e.state in ("ready", "error")]
    for name in ready[:max(0, len(ready) - MEMORY_SLOTS)]:
      del self._entries[name]

  def _run(self):
    while True:
      with self._lock:
        while not self._queue:
          self._lock.wait()
        name = self._queue.pop(0)
        entry = self._entries.get(name)
        if entry is None or entry.state != "queued":
          continue
        entry.state, entry.started = "embedding", time.monotonic()
      try:
        self._embed(name, entry)
        if self.after_embedding is not None:
          entry.state = "prefilling"
          self.after_embedding(name, entry.decoded, entry.embedded)
        entry.state = "ready"
      except Exception as e:  # reported to the page as the image's error
        entry.error = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        entry.state = "error"
      entry.done.set()

  def _embed(self, name: str, entry: _Entry):
    path = self.path_of(name)
    entry.decoded = decode_image_file(path)
    hw = entry.decoded.rgb.shape[:2]
    cache = storage.join(self.cache_dir, self._key(path) + ".npy")
    if storage.exists(cache):
      try:
        entry.embedded = self.predictor.embedded_image_from_features(
            np.load(io.BytesIO(storage.read_bytes(cache))), hw)
        entry.cached = True
        return
      except (OSError, ValueError):
        pass  # a damaged or foreign file: embed again and replace it
    entry.embedded = self.predictor.embed(entry.decoded.rgb)
    with atomic_io.atomic_writer(cache) as f:
      np.save(f, np.asarray(entry.embedded.features, np.float32))

  def _key(self, path: str) -> str:
    digest = hashlib.sha256(self.fingerprint.encode())
    digest.update(str(self.predictor.image_size).encode())
    with storage.open_read(path) as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()[:40]
