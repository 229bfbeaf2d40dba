"""Framework-free core of vrconvert: the architecture spec, its layer expansion, and (with the
conversion issue) the weight mapping and checkpoint readers."""

from vrconvert.converter.arch.families import VARIANTS, expand, get
from vrconvert.converter.arch.layers import Layer, count_params, keras_name, stage_outputs, torch_path
from vrconvert.converter.arch.spec import Arch

__all__ = ["VARIANTS", "Arch", "Layer", "count_params", "expand", "get", "keras_name", "stage_outputs", "torch_path"]
