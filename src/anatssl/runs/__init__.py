"""The run layer, between the entry points (``cli/``, ``bench/``) and the core.

* :mod:`~anatssl.runs.rundir`: :class:`RunDir` / :func:`open_run`, the one reader of a run folder
  (config, checkpoints, metrics, the method that made it, its preprocessing);
* :mod:`~anatssl.runs.resolve`: config resolution for pretraining and fine-tuning (one chain);
* :mod:`~anatssl.runs.pretraining`: :func:`run_pretraining`, which builds the data source once and
  runs a method's declared pre-steps (:data:`~anatssl.runs.pretraining.PRE_STEPS`) before the trainer;
* :mod:`~anatssl.runs.alice_stage0`: Alice's pre-step (train SAM, embed, check the data);
* :mod:`~anatssl.runs.embedding`: SAM runs -> embedding caches (``anatssl embed``).

``import anatssl.runs`` gives the reader and the resolver without importing any method (methods
are imported when a config is built or a method rebuilt); ``run_pretraining`` is imported from
:mod:`anatssl.runs.pretraining`.
"""

from anatssl.runs.resolve import (
    build_finetune_config,
    build_pretrain_config,
    load_finetune_config,
    load_pretrain_config,
    resolve_raw,
)
from anatssl.runs.rundir import RunDir, open_run, resume_pretrain_config

__all__ = [
    "RunDir",
    "build_finetune_config",
    "build_pretrain_config",
    "load_finetune_config",
    "load_pretrain_config",
    "open_run",
    "resolve_raw",
    "resume_pretrain_config",
]
