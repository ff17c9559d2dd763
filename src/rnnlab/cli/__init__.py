"""The entry points: ``rnnlab-train``, ``rnnlab-sample``, ``rnnlab-eval``, ``rnnlab-compare``.

Each is ``python -m rnnlab.cli.<name>``; :mod:`rnnlab.cli.app` holds what they share
(the config directory, composition, resolvers, the one-sentence exit).
"""
