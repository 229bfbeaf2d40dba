"""vrconvert: torchvision's Kinetics-400 video ResNets in PyTorch and Keras 3, and conversion between them.

Subpackages: `vrconvert.converter` (spec, layers, mapping), `vrconvert.models_torch`,
`vrconvert.models_tf`, `vrconvert.cli`. Nothing heavy is imported here: torch, TensorFlow and Keras
load only when a subpackage that needs them is imported.
"""

__version__ = "0.1.0"
