"""Keras and TensorFlow models: the same stage -> parity -> write flow as for PyTorch.

Nothing here imports TensorFlow or Keras at import time: ``_tf`` looks at ``sys.modules`` to tell
what a model is, and the format modules import TensorFlow/Keras inside their verbs.
"""
