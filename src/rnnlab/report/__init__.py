"""Reports from what runs wrote: run directories, sweep summaries, comparison tables and plots.

Reads files only (``config.yaml``, ``metrics.json``, TensorBoard events); it never
imports the model or trains.
"""
