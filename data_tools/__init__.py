"""Dataset tools: a synthetic Cityscapes-layout dataset (``synth``) and the TFRecord converter (``convert``).

The submodules are imported on demand. The converter prepares images in a pool of worker threads
(:mod:`data_tools.snippet_worker`), not processes; both tools read and write through
:mod:`vseg_keras.files`, so their folders may be on any TensorFlow filesystem (:mod:`data_tools.folders`).
"""
