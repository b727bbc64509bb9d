"""Numbers that both the model package and the rest of vseg read; this module imports nothing.

The model package (:mod:`vseg_keras.models`, every Keras backend) imports neither TensorFlow nor
``cityscapesscripts``, and :mod:`vseg_keras.options` (read by the CLI at start-up) imports no Keras,
so what they share lives here.
"""

#: Logits per pixel in the report's set-up: the 19 Cityscapes train classes plus void.
NUM_CLASSES = 20
