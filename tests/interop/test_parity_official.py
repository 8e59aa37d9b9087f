"""Numerical parity with the official segment_anything model (random weights)."""

import numpy as np
import pytest

from samjax.model.prompts import Prompts
from tests.interop.official_helpers import official_decode, official_embed

TOL = 1e-3


def _random_prompt(rng, size, mask_size, kind):
  n = int(rng.integers(1, 6))
  coords = rng.uniform(0, size, (n, 2)).astype(np.float32) if "p" in kind else None
  labels = rng.integers(0, 2, n).astype(np.int32) if "p" in kind else None
  box = None
  if "b" in kind:
    xy = np.sort(rng.uniform(0, size, (2, 2)), axis=0)
    box = xy.T.reshape(4)[[0, 2, 1, 3]].astype(np.float32)  # x0, y0, x1, y1
  mask = rng.normal(0, 3, (mask_size, mask_size)).astype(np.float32) if "m" in kind else None
  return coords, labels, box, mask


def _official_one(sam, emb, prompt, multimask):
  coords, labels, box, mask = prompt
  return official_decode(
      sam, emb, None if coords is None else coords[None],
      None if labels is None else labels[None], None if box is None else box[None],
      None if mask is None else mask[None, None], multimask)


def test_tiny_encoder_matches_official(tiny_pair, rng):
  sam, model, params = tiny_pair
  s = model.config.image_size
  images = rng.normal(0, 1, (2, 3, s, s)).astype(np.float32)
  ours = np.asarray(model.embed_images(params, images))
  ref = official_embed(sam, images)
  assert ours.shape == ref.shape == (2, model.config.prompt_embed_dim, 16, 16)
  assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("multimask", [True, False])
def test_tiny_decoder_padded_batch_matches_official_per_prompt(tiny_pair, rng, multimask):
  """Many random prompts of mixed kinds decoded in ONE fixed-shape padded call;
  each must equal the official result for that prompt alone."""
  sam, model, params = tiny_pair
  cfg = model.config
  s, ms = cfg.image_size, cfg.mask_input_size
  emb = official_embed(sam, rng.normal(0, 1, (1, 3, s, s)).astype(np.float32))
  kinds = ["p", "b", "pb", "pm", "bm", "pbm", "m"] * 4
  prompts = [_random_prompt(rng, s, ms, k) for k in kinds]
  m, n_max = len(prompts), 8
  coords = np.zeros((1, m, n_max, 2), np.float32)
  labels = np.zeros((1, m, n_max), np.int32)
  pvalid = np.zeros((1, m, n_max), bool)
  boxes = np.zeros((1, m, 4), np.float32)
  bvalid = np.zeros((1, m), bool)
  masks = np.zeros((1, m, ms, ms), np.float32)
  mvalid = np.zeros((1, m), bool)
  for i, (c, l, b, mk) in enumerate(prompts):
    if c is not None:
      coords[0, i, :len(c)], labels[0, i, :len(c)], pvalid[0, i, :len(c)] = c, l, True
      # Garbage in the padding slots must not matter.
      coords[0, i, len(c):] = rng.uniform(0, s, (n_max - len(c), 2))
      labels[0, i, len(c):] = 1
    if b is not None:
      boxes[0, i], bvalid[0, i] = b, True
    if mk is not None:
      masks[0, i], mvalid[0, i] = mk, True
  padded = Prompts.create(coords, labels, boxes, masks, point_valid=pvalid,
                          box_valid=bvalid, mask_valid=mvalid)
  logits, iou = model.decode(params, emb, padded, multimask_output=multimask)
  logits, iou = np.asarray(logits), np.asarray(iou)
  k = 3 if multimask else 1
  assert logits.shape == (1, m, k, ms, ms) and iou.shape == (1, m, k)
  for i, prompt in enumerate(prompts):
    ref_logits, ref_iou = _official_one(sam, emb, prompt, multimask)
    assert np.abs(logits[0, i] - ref_logits[0]).max() <= TOL, kinds[i]
    assert np.abs(iou[0, i] - ref_iou[0]).max() <= TOL, kinds[i]


def test_tiny_not_a_point_label_matches_official(tiny_pair, rng):
  """Label -1 (official 'not a point') is a real token, unlike padding."""
  sam, model, params = tiny_pair
  s = model.config.image_size
  emb = official_embed(sam, rng.normal(0, 1, (1, 3, s, s)).astype(np.float32))
  coords = rng.uniform(0, s, (2, 3, 2)).astype(np.float32)
  labels = np.array([[1, -1, 0], [-1, 1, 1]], np.int32)
  ref_logits, ref_iou = official_decode(sam, emb, coords, labels)
  logits, iou = model.decode(params, emb, Prompts.create(coords[None], labels[None]))
  assert np.abs(np.asarray(logits)[0] - ref_logits).max() <= TOL
  assert np.abs(np.asarray(iou)[0] - ref_iou).max() <= TOL


@pytest.mark.slow
def test_vit_b_encoder_matches_official_on_photo(vit_b_pair):
  """Full-size ViT-B at 1024x1024 on a real photograph, float32."""
  import skimage.data
  import torch
  sam, model, params = vit_b_pair
  photo = skimage.data.astronaut()  # 512x512x3 uint8
  image = np.kron(photo, np.ones((2, 2, 1), np.uint8))[:, :1000]  # 1024x1000
  chw = np.ascontiguousarray(image.transpose(2, 0, 1))[None].astype(np.float32)
  with torch.no_grad():
    ref_in = sam.preprocess(torch.from_numpy(chw)).numpy()
  ours_in = np.asarray(model.preprocess(chw))
  np.testing.assert_allclose(ours_in, ref_in, atol=1e-5)
  ours = np.asarray(model.embed_images(params, ours_in))
  ref = official_embed(sam, ref_in)
  assert ours.shape == (1, 256, 64, 64)
  assert np.abs(ours - ref).max() <= TOL
  vit_b_pair_embedding[0] = ref


vit_b_pair_embedding = [None]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["p", "b", "pb", "pm", "ppp"])
@pytest.mark.parametrize("multimask", [True, False])
def test_vit_b_decoder_matches_official(vit_b_pair, kind, multimask):
  sam, model, params = vit_b_pair
  rng = np.random.default_rng(sum(map(ord, kind)) + 7 * multimask)
  emb = vit_b_pair_embedding[0]
  if emb is None:  # encoder test not run first: any realistic embedding will do
    emb = rng.normal(0, 1, (1, 256, 64, 64)).astype(np.float32)
  prompt = _random_prompt(rng, 1024, 256, kind)
  if kind == "ppp":  # multi-point, several prompts batched like predict_torch
    coords = rng.uniform(0, 1024, (4, 5, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (4, 5)).astype(np.int32)
    ref_logits, ref_iou = official_decode(sam, emb, coords, labels, multimask=multimask)
    logits, iou = model.decode(params, emb, Prompts.create(coords[None], labels[None]),
                               multimask_output=multimask)
  else:
    coords, labels, box, mask = prompt
    ref_logits, ref_iou = _official_one(sam, emb, prompt, multimask)
    add = lambda x, axes: None if x is None else x[axes]
    prompts = Prompts.create(add(coords, (None, None)), add(labels, (None, None)),
                             add(box, (None, None)), add(mask, (None, None)))
    logits, iou = model.decode(params, emb, prompts, multimask_output=multimask)
  assert np.abs(np.asarray(logits)[0] - ref_logits).max() <= TOL
  assert np.abs(np.asarray(iou)[0] - ref_iou).max() <= TOL
