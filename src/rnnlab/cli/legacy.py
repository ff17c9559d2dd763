"""Run configs saved before rnnlab's layered packages, brought up to date for ``resume=``.

A ``config.yaml`` is a resolved config: it names classes by their import path and holds
every setting as it was. What changed since the first layout, each undone here:

- ``rnnlab.module``, ``rnnlab.checkpointing`` and ``rnnlab.gradients`` moved under
  ``rnnlab.training``;
- the three checkpoint callbacks left ``callbacks:`` for their own group, ``checkpoint:``;
- the embedded corpus is ``data.source=embedded`` (it was ``default``);
- ``optimized_metric`` names its split (``best_val/ppl``, it was ``ppl``).

Checkpoints need nothing of the sort: their layout has not changed.
"""

from __future__ import annotations

from typing import Any

RENAMED_TARGETS = {
    "rnnlab.module.RNNLMModule": "rnnlab.training.module.RNNLMModule",
    "rnnlab.checkpointing.AtomicCheckpointIO": "rnnlab.training.checkpoint.AtomicCheckpointIO",
    "rnnlab.gradients.GradientMonitor": "rnnlab.training.callbacks.gradients.GradientMonitor",
}


def upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as today's code reads it; a config of today's layout comes back unchanged."""
    config = renamed(config)
    if "checkpoint" not in config:
        config["checkpoint"] = checkpoint_group(config.get("callbacks") or {})
        config.setdefault("paths", {})["ckpt_dir"] = config["checkpoint"].get("dirpath")
    data = config.get("data") or {}
    if data.get("source") == "default":
        data["source"] = "embedded"
    metric = config.get("optimized_metric")
    if metric is not None and "/" not in str(metric):
        config["optimized_metric"] = f"best_val/{metric}"
    return config


def renamed(node: Any) -> Any:
    """``node`` with every ``_target_`` of :data:`RENAMED_TARGETS` at its new place."""
    if isinstance(node, dict):
        return {
            k: RENAMED_TARGETS.get(v, v) if k == "_target_" else renamed(v) for k, v in node.items()
        }
    if isinstance(node, list):
        return [renamed(v) for v in node]
    return node


def checkpoint_group(callbacks: dict[str, Any]) -> dict[str, Any]:
    """The ``checkpoint:`` group equivalent to the old checkpoint callbacks (taken out of
    ``callbacks``); empty, so checkpointing off, if the run had none of them."""
    best = callbacks.pop("model_checkpoint", None)
    periodic = callbacks.pop("periodic_checkpoint", None)
    callbacks.pop("save_on_interrupt", None)
    if best is None and periodic is None:
        return {}
    return {
        "_target_": "rnnlab.training.checkpoint.checkpoint_callbacks",
        "dirpath": (best or periodic)["dirpath"],
        "every_n_train_steps": (periodic or {}).get("every_n_train_steps", 200),
        "monitor": (best or {}).get("monitor", "val/loss"),
        "mode": (best or {}).get("mode", "min"),
    }
