"""Runs the official torch model on the same inputs as samjax (test helper)."""

import numpy as np
import torch


def official_embed(sam, images_nchw: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return sam.image_encoder(torch.from_numpy(images_nchw)).numpy()


def official_decode(sam, embedding, coords=None, labels=None, box=None, mask=None,
                    multimask=True):
  """One image, P prompts of identical structure.

  embedding [1, C, h, w]; coords [P, N, 2]; labels [P, N]; box [P, 4];
  mask [P, 1, 4h, 4w]. Returns (logits [P, K, 4h, 4w], iou [P, K]).
  """
  t = lambda a: None if a is None else torch.from_numpy(np.asarray(a))
  with torch.no_grad():
    points = None if coords is None else (t(coords).float(), t(labels).int())
    sparse, dense = sam.prompt_encoder(points=points, boxes=t(box), masks=t(mask))
    logits, iou = sam.mask_decoder(
        image_embeddings=t(embedding), image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=multimask)
  return logits.numpy(), iou.numpy()
