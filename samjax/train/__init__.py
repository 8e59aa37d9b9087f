"""Promptable-segmentation pretraining: prompt simulation, losses, optimizer,
sharded train step, orbax checkpoints and the training loop."""
