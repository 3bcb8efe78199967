"""Fine-tuning DGIQA and Life-IQA on rated pictures (``dgiqa finetune``).

One file per concern: :mod:`.data` (samples, crops and flips, the depth cache), :mod:`.splits` (the
validation split, made once and hashed), :mod:`.losses`, :mod:`.network` (``--init`` and ``--freeze``),
:mod:`.loop` (optimiser, schedule, epochs, selection, the final test), :mod:`.checkpoint` (atomic save and
resume with RNG states) and :mod:`.report` (the weights folder, epoch log, curves and card).
"""

from __future__ import annotations

from dgiqa_cli.training.loop import Events, FinetuneError, FinetuneResult, FinetuneSettings, finetune

__all__ = ["Events", "FinetuneError", "FinetuneResult", "FinetuneSettings", "finetune"]
