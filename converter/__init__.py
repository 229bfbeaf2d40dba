"""vrconvert's library: `arch` (descriptions, records, mapping, detection), `formats` (bytes <-> arrays),
and the flows built on the model builders (`conversion`, `parity`, `deploy`, `video`, `evaluate`)."""

from vrconvert.converter.arch.families import VARIANTS, expand, get
from vrconvert.converter.arch.layers import Layer, count_params, keras_name, stage_outputs, torch_path
from vrconvert.converter.arch.spec import Arch

__all__ = ["VARIANTS", "Arch", "Layer", "count_params", "expand", "get", "keras_name", "stage_outputs", "torch_path"]
