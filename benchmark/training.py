"""Trainer settings shared by every stage, and the two things the runner does
with a LightningModule: fit it on a dataset, and evaluate it."""
from __future__ import annotations

import logging
import warnings

import lightning as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment

from benchmark.storage.checkpoints import EpochCheckpoint, JobCheckpoints, SafeCheckpointIO
from lightning_modules.base import CLEAN, POISONED, BackdoorStage

# Lightning's tips ("consider num_workers", "GPU available but not used") are
# noise in a benchmark that chose its loaders deliberately.
for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
              "lightning.fabric.utilities.seed"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
# Re-activation keeps the attacked model in eval mode on purpose.
warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
# On a machine with SLURM installed Lightning suggests srun for every fit; the
# suite runs one process per job by design (sweeps/slurm.py submits them).
warnings.filterwarnings("ignore", ".*The `srun` command is available on your system but is not used.*")


class TrainerFactory:
    def __init__(self, accelerator: str = "auto", progress: bool = True, precision: str | None = None,
                 compile: bool = False):
        self.accelerator = accelerator
        #: torch.compile the model for the long fits (f_C and f_A training):
        #: they run thousands of steps, enough to repay the compilation; the
        #: short ones (defenses on a 5 % subset, re-activation) would not
        self.compile = compile
        self.progress = progress
        #: a Lightning logger for training runs (the sweep worker sets a W&B one)
        self.logger = None
        cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        # bf16 autocast for training weights on GPUs; full precision on the CPU
        # where bf16 is slow. Evaluation and re-activation search always run in
        # fp32 (the authors' code has no autocast there; bf16 logits would turn
        # QBRA's accept/reject decisions into a matter of rounding).
        self.precision = precision or ("bf16-mixed" if cuda else "32-true")
        self.device = torch.device("cuda" if cuda else "cpu")
        #: where the current job's fits checkpoint (set by the cell around a job)
        self.checkpoints: JobCheckpoints | None = None

    def trainer(self, max_epochs: int = 1, log: bool = False, precision: str | None = None,
                callbacks: list | None = None) -> L.Trainer:
        callbacks = list(callbacks or [])
        if self.progress:
            from lightning.pytorch.callbacks import RichProgressBar
            callbacks.append(RichProgressBar(leave=False))
        return L.Trainer(accelerator=self.accelerator, devices=1, max_epochs=max_epochs,
                         precision=precision or self.precision, logger=(self.logger or False) if log else False,
                         enable_checkpointing=False, log_every_n_steps=10,
                         enable_model_summary=False, enable_progress_bar=self.progress,
                         num_sanity_val_steps=0, callbacks=callbacks,
                         # one process, one device, whatever the scheduler: Lightning
                         # would otherwise read a SLURM job's variables as a cluster
                         # to join; checkpoints are written without pickle
                         plugins=[LightningEnvironment(), SafeCheckpointIO()])

    def fit(self, module: L.LightningModule, loader, epochs: int, precision: str | None = None) -> None:
        """Train; `precision` overrides the default (re-activation search asks
        for "32-true"). Inside a job with checkpoints, the fit saves every few
        epochs and continues from its last save if the job ran before."""
        callbacks, resume = [], None
        if self.checkpoints is not None:
            path = self.checkpoints.next_fit()
            callbacks.append(EpochCheckpoint(path, self.checkpoints.every, getattr(loader, "generator", None)))
            resume = path if path.is_file() else None
            if resume is not None:
                print(f"resuming this fit from its checkpoint {path.name} (a run of this job was interrupted)",
                      flush=True)
        self.trainer(max_epochs=epochs, log=True, precision=precision, callbacks=callbacks).fit(
            module, train_dataloaders=loader, ckpt_path=resume,
            weights_only=True)  # true of SafeCheckpointIO, which never unpickles; silences Lightning's notice

    def evaluate(self, module: BackdoorStage, clean_loader=None, poisoned_loader=None) -> dict[str, float]:
        roles, loaders = [], []
        for role, loader in ((CLEAN, clean_loader), (POISONED, poisoned_loader)):
            if loader is not None:
                roles.append(role)
                loaders.append(loader)
        module.eval_roles = tuple(roles)
        trainer = self.trainer(precision="32-true")
        trainer.test(module, dataloaders=loaders, verbose=False)
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
