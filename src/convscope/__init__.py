"""convscope — see inside a convolutional network.

Train the classic small MNIST CNN, then look at what every layer and map does:
activation grids, optimised input patterns ("OIPs"), class visualisations,
class-pattern comparisons, attributions and DeepDreams.

Layer addresses are one syntax everywhere (see :mod:`convscope.address`)::

    "Conv2D_3"          a layer
    "Conv2D_3:120"      map (channel) 120 of that layer
    "Conv2D_3:120@1,2"  the single unit at row 1, column 2 of map 120
    "Dense_1:42"        node 42 of a dense layer

Any ``nn.Module`` classifier becomes a convscope model with a spec::

    net = convscope.wrap(my_module, input_shape=(3, 32, 32), class_names=[...], preprocessing="unit")
"""

__version__ = "0.1.0"

from convscope.address import LayerAddress, parse_address  # noqa: E402
from convscope.device import resolve_device  # noqa: E402
from convscope.spec import ModelSpec, SpecError, spec_of, wrap  # noqa: E402

__all__ = ["__version__", "LayerAddress", "ModelSpec", "SpecError", "parse_address", "resolve_device", "spec_of", "wrap"]
