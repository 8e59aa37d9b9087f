"""``segment_anything.modeling`` counterpart: the ``Sam`` model object."""

from samjax.segment_anything.modeling.sam import ImageEncoder, Sam

__all__ = ["ImageEncoder", "Sam"]
