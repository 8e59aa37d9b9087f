"""Planning runs for chips that are not here (``samjax plan``).

``chips``: accelerator table and TPU topology names; ``flops``: matmul FLOPs
of a jaxpr counted through scans; ``report``: ``plan(config, topology=...)``
compiles the real train step for compile-only TPU devices and returns a
``PlanReport`` (per-chip memory, FLOPs, step time, MFU).
"""
