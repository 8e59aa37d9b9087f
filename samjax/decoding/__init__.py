"""Execution plans: how the SAM decoder runs, kept apart from what it computes.

``samjax.model`` is the paper's math. A plan computes the same values from
the same parameters (tests compare every plan with the model), arranged for
one workload and backend:

  - ``interactive.InteractivePlan``: many prompts against a few embedded
    images (predictor, automatic mask generator, ``samjax.segment_anything``);
  - ``training.TrainingPlan``: decoder passes of the training simulation,
    with the reference or the factorized decoder form, in prompt chunks
    whose gradients are taken in the forward pass.
"""
