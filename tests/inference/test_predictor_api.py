"""SamPredictor behaviour beyond parity: compilation count, input errors, loading."""

import numpy as np
import pytest
import skimage.data

from samjax import SamPredictor, load_sam
from samjax.inference import predictor as predictor_module
from samjax.loading import LoadedSam


@pytest.fixture(scope="module")
def predictor():
  from tests.conftest import official_pair
  _, model, params = official_pair("vit_tiny")
  p = SamPredictor(LoadedSam(model, params))
  p.set_image(skimage.data.coffee())
  return p


def decode_trace_count() -> int:
  """Programs compiled so far for the predictor's jitted decode (one per
  bucket and prompt kind): jit's own cache, no hook in production code."""
  return predictor_module._decode._cache_size()


def test_interactive_clicks_compile_once_per_bucket(predictor):
  """1..8 clicks with mask feedback: point buckets 1, 2, 4, 8 -> <= 4 compilations."""
  rng = np.random.default_rng(0)
  before = decode_trace_count()
  coords, labels, prev = [], [], None
  for _ in range(8):
    coords.append([rng.uniform(0, 600), rng.uniform(0, 400)])
    labels.append(int(rng.integers(0, 2)))
    masks, scores, low = predictor.predict(np.array(coords), np.array(labels),
                                           mask_input=prev, multimask_output=True)
    prev = low[np.argmax(scores)][None]
  first_session = decode_trace_count() - before
  assert first_session <= 4
  # A second session on the same image size reuses every program.
  before = decode_trace_count()
  for k in range(1, 9):
    predictor.predict(np.array(coords[:k]), np.array(labels[:k]),
                      mask_input=None if k == 1 else prev)
  assert decode_trace_count() == before
  assert masks.shape == (3, 400, 600)


def test_embedding_is_cached_and_reset(predictor):
  emb = predictor.get_image_embedding()
  assert emb.shape == (1, 64, 16, 16)
  p2 = SamPredictor(predictor.model)
  with pytest.raises(RuntimeError, match="set_image"):
    p2.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
  with pytest.raises(RuntimeError, match="set_image"):
    p2.get_image_embedding()
  p2.set_image(skimage.data.coffee())
  np.testing.assert_array_equal(p2.get_image_embedding(), emb)
  p2.reset_image()
  assert not p2.is_image_set


def test_bgr_input_equals_rgb(predictor):
  image = skimage.data.coffee()
  p2 = SamPredictor(predictor.model)
  p2.set_image(np.ascontiguousarray(image[..., ::-1]), image_format="BGR")
  np.testing.assert_array_equal(p2.get_image_embedding(), predictor.get_image_embedding())


@pytest.mark.parametrize("image, message", [
    (np.zeros((20, 30), np.uint8), "grayscale"),
    (np.zeros((20, 30, 1), np.uint8), "grayscale"),
    (np.zeros((20, 30, 4), np.uint8), "RGBA"),
    (np.zeros((20, 30, 3), np.float32), "uint8"),
    (np.zeros((20, 30, 3, 1), np.uint8), "HxWx3"),
])
def test_bad_images_are_explained(predictor, image, message):
  with pytest.raises(ValueError, match=message):
    SamPredictor(predictor.model).set_image(image)


@pytest.mark.parametrize("kwargs, message", [
    (dict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([2])), "1 .foreground"),
    (dict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([-1])), "0 .background"),
    (dict(point_coords=np.array([[np.nan, 10.0]]), point_labels=np.array([1])), "NaN"),
    (dict(point_coords=np.array([[10.0, 10.0]])), "point_labels must be given"),
    (dict(point_coords=np.array([10.0, 10.0]), point_labels=np.array([1])), "Nx2"),
    (dict(point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1, 0])), "one label per"),
    (dict(box=np.array([50.0, 10.0, 20.0, 60.0])), "x1 >= x0"),
    (dict(box=np.array([5.0, 10.0, 20.0])), "length-4"),
    (dict(box=np.array([5.0, 10.0, 20.0, np.inf])), "NaN or infinite"),
    (dict(mask_input=np.zeros((1, 32, 32))), "1x64x64"),
    ({}, "at least one prompt"),
])
def test_bad_prompts_are_explained(predictor, kwargs, message):
  with pytest.raises(ValueError, match=message):
    predictor.predict(**kwargs)


def test_predict_batch_checks_matching_counts(predictor):
  with pytest.raises(ValueError, match="same number of prompts"):
    predictor.predict_batch(np.ones((3, 1, 2)), np.ones((3, 1)), boxes=np.ones((2, 4)))


def test_load_sam_from_pth_and_dir(tmp_path):
  """load_sam takes an official .pth (variant inferred) or a converted directory."""
  from samjax.cli import main
  from samjax.interop.torch_io import save_state_dict
  from tests.conftest import official_pair
  sam, model, params = official_pair("vit_tiny")
  pth = str(tmp_path / "tiny.pth")
  save_state_dict({k: v.numpy() for k, v in sam.state_dict().items()}, pth)
  loaded = load_sam(pth)
  assert loaded.config.same_architecture(model.config)
  assert main(["convert", "--from-torch", pth, "--out", str(tmp_path / "m")]) == 0
  loaded_dir = load_sam(str(tmp_path / "m"), dtype="bfloat16")
  assert loaded_dir.config.dtype == "bfloat16"
  with pytest.raises(ValueError, match="architecture"):
    load_sam(pth, image_size=512)
  with pytest.raises(FileNotFoundError):
    load_sam(str(tmp_path / "nope.pth"))
  with pytest.raises(TypeError, match="load_sam"):
    SamPredictor(params)


def test_not_a_point_label_and_1x4_box_are_accepted(predictor):
  """Official conventions: label -1 pads a point list ("not a point": its
  coordinates are ignored, even outside the image) and the notebook passes
  ``input_box[None, :]``."""
  box = np.array([100.0, 50.0, 400.0, 300.0])
  pts, labels = np.array([[200.0, 150.0]]), np.array([1])
  ref = predictor.predict(box=box)
  got = predictor.predict(box=box[None, :])
  for a, b in zip(got, ref):
    np.testing.assert_array_equal(a, b)
  ref = predictor.predict(pts, labels, box)
  got = predictor.predict(pts, labels, box[None, :])
  for a, b in zip(got, ref):
    np.testing.assert_array_equal(a, b)
  # A -1 point anywhere (here far outside the image) gives the same result as
  # a -1 point at the origin: its coordinates are not used.
  far = predictor.predict(np.array([[200.0, 150.0], [-5000.0, 9000.0]]), np.array([1, -1]),
                          box[None, :])
  origin = predictor.predict(np.array([[200.0, 150.0], [0.0, 0.0]]), np.array([1, -1]), box)
  for a, b in zip(far, origin):
    np.testing.assert_array_equal(a, b)
  # Batched: -1 pads the prompt with fewer points.
  masks, iou, _ = predictor.predict_batch(np.array([[[200.0, 150.0], [0.0, 0.0]],
                                                    [[300.0, 200.0], [310.0, 220.0]]]),
                                          np.array([[1, -1], [1, 0]]))
  assert masks.shape == (2, 3, 400, 600) and np.isfinite(iou).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(point_coords=np.array([[10.0, 10.0], [20.0, 20.0]]), point_labels=np.array([-1, -1])),
     "not a point"),
    (dict(box=np.zeros((2, 4))), "1x4"),
    (dict(box=np.zeros((1, 1, 4))), "1x4"),
])
def test_not_a_point_alone_and_other_box_shapes_are_explained(predictor, kwargs, message):
  with pytest.raises(ValueError, match=message):
    predictor.predict(**kwargs)
  # With a box, points that are all "not a point" are fine (the box is the prompt).
  if "point_labels" in kwargs:
    predictor.predict(**kwargs, box=np.array([10.0, 10.0, 50.0, 50.0]))


def test_batched_prompt_of_only_not_a_point_is_explained(predictor):
  with pytest.raises(ValueError, match=r"not a point.*\(prompt 1\)"):
    predictor.predict_batch(np.ones((2, 1, 2)), np.array([[1], [-1]]))
