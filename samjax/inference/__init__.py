"""Inference helpers: official-equivalent transforms (predictor and AMG build on these)."""
