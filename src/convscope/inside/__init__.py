"""Look inside the network: activations, filters, predictions, class patterns,
mistakes and top-k dataset examples with receptive fields — for any model with a
convscope spec (gray or RGB, any input size, any class count). Engines only:
tensors and dataclasses in and out; draw with :mod:`convscope.render.inside`; the
use cases with JSON and figures are :mod:`convscope.app.inside`.

In a notebook::

    from convscope.data import load_split
    from convscope.inside import image_activations, topk_examples
    from convscope.models import load_model
    from convscope.render.inside import activation_grid_figure, topk_gallery_figure

    model, test = load_model(), load_split("test")
    acts = image_activations(model, test.images[1270], "Conv2D_1")   # acts.values: (32, 26, 26)
    activation_grid_figure(acts.values, layer=acts.layer, image=acts.image)   # a Figure
    top = topk_examples(model, test.images, "Conv2D_3", k=9)          # top.indices: (128, 9)
    topk_gallery_figure(top, test.images, maps=range(16))
"""

from convscope.inside.activations import ImageActivations, image_activations, layer_activations, reference_scaling
from convscope.inside.class_patterns import (
    ClassComparison, Examples, PatternMarks, Separation, class_separation, compare_classes, pattern_categories,
    pattern_marks, pick_examples,
)
from convscope.inside.filters import FilterBank, conv_filters, conv_layers
from convscope.layers import LayerInfo, compare_layers, first_conv_layer, last_conv_layer, model_layers
from convscope.inside.mistakes import Mistakes, select_mistakes
from convscope.inside.predictions import Prediction, predict_images
from convscope.receptive_field import (
    FieldGeometry, ReceptiveFields, field_geometry, gradient_fields, receptive_field, receptive_fields,
)
from convscope.inside.topk import TopK, topk_examples, topk_layers

__all__ = [
    "ClassComparison", "Examples", "FieldGeometry", "FilterBank", "ImageActivations", "LayerInfo", "Mistakes",
    "PatternMarks", "Prediction", "ReceptiveFields", "Separation", "TopK", "class_separation", "compare_classes",
    "compare_layers", "conv_filters", "conv_layers", "field_geometry", "first_conv_layer", "gradient_fields",
    "image_activations", "last_conv_layer", "layer_activations", "model_layers", "pattern_categories",
    "pattern_marks", "pick_examples", "predict_images", "receptive_field", "receptive_fields", "reference_scaling",
    "select_mistakes", "topk_examples", "topk_layers",
]
