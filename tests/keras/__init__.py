"""Keras/TensorFlow tests (skipped without the [tensorflow] extra); TensorFlow's C++ logs quiet."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
