"""Errors raised when a checkpoint does not fit a model."""

from __future__ import annotations

from collections.abc import Sequence


class CheckpointMismatchError(ValueError):
  """A state_dict / params tree does not match the model config.

  Lists every problem by name, so a user can see at once whether the file is
  a different variant, a different model or a truncated file.
  """

  def __init__(self, source: str, missing: Sequence[str] = (),
               unexpected: Sequence[str] = (),
               mismatched: Sequence[tuple[str, tuple, tuple]] = (),
               hint: str = ""):
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.mismatched = list(mismatched)
    lines = [f"{source} does not match the model:"]
    if hint:
      lines.append(f"  {hint}")
    if self.missing:
      lines.append(f"  missing keys ({len(self.missing)}): " + _short(self.missing))
    if self.unexpected:
      lines.append(f"  unexpected keys ({len(self.unexpected)}): " + _short(self.unexpected))
    for key, got, want in self.mismatched[:20]:
      lines.append(f"  shape mismatch for {key}: checkpoint {got}, model {want}")
    if len(self.mismatched) > 20:
      lines.append(f"  ... and {len(self.mismatched) - 20} more shape mismatches")
    super().__init__("\n".join(lines))


def _short(names: Sequence[str], limit: int = 12) -> str:
  shown = ", ".join(names[:limit])
  return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")
