"""`.pth` files that are not plain tensors: refused, never unpickled, and the
error never tells the user to load with ``weights_only=False``."""

from __future__ import annotations

import fractions
import pickle
import re

import pytest
import torch

from samjax.cli import main
from samjax.interop import torch_io

# Torch's own advice, in the forms its messages use; none may reach a user.
UNSAFE = re.compile(r"weights_only`?\s*(set to|=)\s*`?False|safe_globals", re.IGNORECASE)


class Payload:
  """A class a malicious checkpoint could carry: unpickling it would run
  ``__reduce__``'s callable; loading must refuse it without calling anything."""

  def __reduce__(self):
    return (_record_call, ("unpickled",))


CALLS: list[str] = []


def _record_call(what):
  CALLS.append(what)
  return what


def _assert_safe_message(message: str, path):
  assert str(path) in message
  assert not UNSAFE.search(message), message
  assert "\x1b[" not in message  # no terminal colour codes


@pytest.mark.parametrize("kind", ["non-tensor object", "code-running object",
                                  "plain pickle", "garbage"])
def test_non_tensor_pickles_are_refused_without_unsafe_advice(tmp_path, kind):
  path = tmp_path / "model.pth"
  if kind == "non-tensor object":
    torch.save({"weight": torch.zeros(2), "scale": fractions.Fraction(1, 3)}, path)
    want = "pickled fractions.Fraction object"
  elif kind == "code-running object":
    torch.save({"weight": torch.zeros(2), "evil": Payload()}, path)
    want = "not a loadable PyTorch checkpoint of plain tensors"
  elif kind == "plain pickle":
    path.write_bytes(pickle.dumps({"weight": {1, 2}}))
    want = "not a loadable PyTorch checkpoint of plain tensors"
  else:  # bytes that start like a pickle but are none
    path.write_bytes(b"g-arbage, not a checkpoint")
    want = "not a loadable PyTorch checkpoint of plain tensors"
  # torch's raw error carries the advice this module must strip.
  with pytest.raises(Exception) as raw:
    torch.load(path, weights_only=True)
  assert UNSAFE.search(str(raw.value)), raw.value
  with pytest.raises(ValueError) as err:
    torch_io.load_state_dict(str(path))
  message = str(err.value)
  _assert_safe_message(message, path)
  assert want in message and "never unpickles" in message
  # No chained torch error either (it would print the advice under --debug).
  assert err.value.__cause__ is None and err.value.__suppress_context__
  assert CALLS == []


def test_other_load_errors_keep_torch_reason_minus_unsafe_advice(tmp_path):
  path = tmp_path / "cut.pth"
  torch.save({"weight": torch.zeros(1000)}, path)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])  # a download cut short
  with pytest.raises(ValueError, match="not a loadable PyTorch checkpoint") as err:
    torch_io.load_state_dict(str(path))
  _assert_safe_message(str(err.value), path)
  assert "central directory" in str(err.value)  # torch's reason is kept


def test_unsafe_sentences_are_dropped_from_any_torch_message():
  err = RuntimeError("Bad file. Re-running `torch.load` with `weights_only` set to `False` "
                     "will likely succeed. Or use torch.serialization.add_safe_globals([X]). "
                     "The end.")
  message = torch_io.describe_load_error("f.pth", err)
  _assert_safe_message(message, "f.pth")
  assert "Bad file." in message and "The end." in message


def test_convert_cli_reports_a_pickle_in_one_line_without_unsafe_advice(tmp_path, capsys):
  path = tmp_path / "model.pth"
  torch.save({"scale": fractions.Fraction(1, 3)}, path)
  rc = main(["convert", "--from-torch", str(path), "--out", str(tmp_path / "m")])
  err = capsys.readouterr().err
  assert rc == 1 and "Traceback" not in err, err
  assert err.startswith("samjax convert: error: ") and err.strip().count("\n") == 0, err
  _assert_safe_message(err, path)
  assert not (tmp_path / "m").exists()
