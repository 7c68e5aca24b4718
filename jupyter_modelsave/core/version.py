"""The package's version: ``_version.py``, which hatch writes when the package is installed.

The core reads it here, and the package's face (``jupyter_modelsave.__version__``) from here; a
source tree that was never installed has no ``_version.py`` and says "dev".
"""

from __future__ import annotations

try:
    from .._version import __version__
except ImportError:  # a source tree that was never installed
    __version__ = "dev"
