"""Lightning callbacks: what a run needs besides the research in the LightningModule.

``rnnlab-train`` always installs :class:`~.throughput.Throughput`,
:class:`~.finite.FiniteGuard` and :class:`~.random_state.RandomStateCheckpoint` (and the
checkpoints of :mod:`rnnlab.training.checkpoint`, :class:`~.interrupt.SaveOnInterrupt`
among them), whatever ``callbacks=`` says;
:class:`~.gradients.GradientMonitor` comes with ``callbacks=gradients``.
"""
