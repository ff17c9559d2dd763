"""Training with Lightning: the LightningModule, its callbacks, checkpoints and resume.

Knows Lightning, not Hydra: the entry points (:mod:`rnnlab.cli`) compose the configs
and hand plain values in.
"""
