"""Weights between samjax and the official PyTorch ``segment_anything``."""

from samjax.interop import config_from_shapes, model_dir  # noqa: F401 - submodules
from samjax.interop.config_from_shapes import infer_config
from samjax.interop.errors import CheckpointMismatchError
from samjax.interop.model_dir import load_model_dir, save_model_dir
from samjax.interop.official import build_official_sam, constructor_kwargs
from samjax.interop.param_table import ParamRule, param_table
from samjax.interop.state_dict import (
                                    export_official,
                                    import_official,
                                    params_from_state_dict,
                                    sidecar_path,
                                    state_dict_from_params,
)

__all__ = [
                                    "CheckpointMismatchError",
                                    "ParamRule",
                                    "build_official_sam",
                                    "constructor_kwargs",
                                    "export_official",
                                    "import_official",
                                    "infer_config",
                                    "load_model_dir",
                                    "param_table",
                                    "params_from_state_dict",
                                    "save_model_dir",
                                    "sidecar_path",
                                    "state_dict_from_params",
]
