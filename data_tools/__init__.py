"""Dataset tools: synthetic video datasets in every layout the converter reads (``synth``, rendered by
``synthetic_scene``) and the TFRecord converter (``convert``, one reader per layout in ``layouts``).

The submodules are imported on demand. The converter prepares clips in a pool of worker threads
(:mod:`data_tools.clip_worker`), not processes; both tools read and write through
:mod:`data_tools.filesystem` and :mod:`vseg_keras.files`, so their folders may be on any TensorFlow
filesystem.
"""
