"""Orbax checkpoints of a training workdir (``WORKDIR/checkpoints/<step>/``,
layout in ``samjax.formats``), below both of their users: ``samjax.train``
saves and resumes them (``samjax.train.checkpointing``) and ``samjax.loading``
reads their params for inference, neither through the other.

``workdir``: opening a workdir's checkpoints and reading params, newest
restorable step first. ``orbax_orphans``: keeps a failed restore's report to
one line.
"""
