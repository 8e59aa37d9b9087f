"""The SAM paper's zero-shot evaluation protocols (``samjax eval``).

Each protocol runs any samjax model on a dataset in its standard format and
writes a results file with the model, code version and protocol settings;
per-image results are kept in a resumable log (``per_image_log``).
"""
