"""Dataset tools: a synthetic Cityscapes-layout dataset (``synth``) and the TFRecord converter (``convert``).

The submodules are imported on demand; :mod:`data_tools.snippet_worker` must stay free of TensorFlow
because it runs in the converter's worker processes.
"""
