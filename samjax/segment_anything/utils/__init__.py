"""``segment_anything.utils`` counterpart: ``transforms`` and ``amg``."""
