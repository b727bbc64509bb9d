"""Numbers that both the model package and the rest of vseg read; this module imports nothing.

The model package (:mod:`vseg_keras.models`, every Keras backend) imports neither TensorFlow nor
``cityscapesscripts``, and :mod:`vseg_keras.options` (read by the CLI at start-up) imports no Keras,
so what they share lives here.
"""

#: Encoder channels per level for each model size (report Table 1).
SIZES: dict[str, tuple[int, ...]] = {
    "original": (64, 128, 256),
    "small-shallow": (16, 32, 64),
    "small-deep": (16, 32, 64, 128),
}

#: Logits per pixel in the report's set-up: the 19 Cityscapes train classes plus void.
NUM_CLASSES = 20

#: ``vseg train --temporal-loss-target``: what the frame pair is tied to: ``labels``: the frame before learns
#: the labelled frame's ground truth, warped to it; ``labelled``: the frame before learns from the labelled
#: frame's prediction (held fixed, a stop-gradient); ``previous``: the labelled frame learns from the frame
#: before (ETC's construction); ``neither``: both predictions learn from each other.
TEMPORAL_LOSS_TARGETS = ("labels", "labelled", "previous", "neither")
#: ``vseg train --temporal-loss-normalization``: ``weight``: a mean over the occlusion weight,
#: ``sum(w d) / sum(w)``; ``pixels``: over every pixel of the batch, ``sum(w d) / N`` (ETC's).
TEMPORAL_LOSS_NORMALIZATIONS = ("weight", "pixels")
#: ``vseg train --temporal-loss-occlusion``: how the temporal loss finds the pixels of the labelled frame that
#: were visible in the frame before: ``photometric``: ETC's weight ``exp(-50 ||I_t(x) - I_t-1(x + f(x))||^2)``,
#: which also drops pixels whose look changes (lighting, a new texture); ``forward-backward``: 1 where the
#: flow back to the frame before and the flow forward from it agree, else 0 (Sundaram et al., ECCV 2010).
OCCLUSION_METHODS = ("forward-backward", "photometric")
#: ``vseg train --temporal-loss-distance``: how two class distributions are compared per pixel:
#: ``kl``: the Kullback-Leibler divergence from the target's to the other (the cross-entropy's units and
#: gradients: ``p - q`` per logit, also where the prediction is confident); ``squared``: ETC's squared distance
#: of the probabilities (its gradient vanishes where the softmax saturates).
TEMPORAL_LOSS_DISTANCES = ("kl", "squared")
