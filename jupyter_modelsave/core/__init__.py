"""The pure core of jupyter_modelsave: discovery, staging, exporters, parity, artifacts, loading.

Nothing here imports Jupyter, IPython or ipywidgets; torch is imported by the modules that need it,
and this package itself is only imported when a public function is first used.
"""
