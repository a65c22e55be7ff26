"""What the timed workloads of `python -m benchmark.speed.bench` (bench_workloads.py)
share. Each workload runs two ways:
through the suite's real path (Lightning modules fitted or tested by
`benchmark.training.TrainerFactory`) and through a plain-PyTorch loop that
does the same work on the same data, model architecture, batch size, device
and precision. See benchmark/speed/bench.py for what the ratio means.

Work is counted, not assumed: a forward pre-hook on the model counts the
calls and images every forward sees, on both sides, so a result records that
the two loops really ran the same number of steps over the same images.
Config values (learning rates, epsilons, loss weights) for the plain loops are
read from the suite module's own hyperparameters, so the two never drift
apart; the method's loss (WBA's `reactivation_loss`) and the norm projection
are reused as the maths they are, not as framework.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from benchmark.models import build_model
from benchmark.training import TrainerFactory
from benchmark.triggers import build_trigger
from datamodules.synthetic import SyntheticDataModule

TARGET_LABEL = 0
POISON_RATE = 0.1  # the paper's rate; sets how many rows of a batch carry the trigger
SEED = 0

# QBRA searches without an optimiser on purpose; Lightning's notice about it is noise here.
warnings.filterwarnings("ignore", ".*configure_optimizers` returned `None`.*")


@dataclass(frozen=True)
class Sizes:
    """How much work one timed run of each workload does."""
    train_images: int          # attack training: one epoch over this many images
    train_batch: int           # 128, the paper's training batch
    defense_subset: int        # FT's clean subset (the paper: 5 % of 50,000 = 2,500)
    defense_epochs: int        # FT epochs over that subset
    defense_batch: int         # FT's batch (BackdoorBench: 256)
    wba_samples: int           # attacker samples (the paper: 1,000)
    wba_batch: int             # 128, drop_last as the reference
    wba_inner_steps: int       # delta updates per batch (the paper: 5)
    wba_epochs: int
    query_samples: int         # images per query (QBRA's default batch: 500)
    queries: int               # oracle calls per timed run
    test_images: int           # clean test set; the poisoned one is its non-target part
    eval_batch: int            # evaluation batch (the data module's; 4,096 on CUDA as the cell sets)
    warmup_fraction: float = 0.1  # untimed warm-up runs do about this share of the timed work


def make_sizes(images: int, cuda: bool) -> Sizes:
    """Sizes of every workload from the training image count, keeping the
    paper's batch sizes and per-epoch structure (small subsets, many
    epochs) so per-epoch costs weigh as they do in the real grid."""
    poisoned = int(round(POISON_RATE * images))
    defense_subset = max(2, min(2_500, images // 2))
    wba_samples = max(2, min(1_000, poisoned))
    wba_batch = min(128, wba_samples)
    wba_images_per_epoch = (wba_samples // wba_batch) * wba_batch * 5
    query_samples = max(2, min(500, poisoned))
    return Sizes(
        train_images=images, train_batch=min(128, images),
        defense_subset=defense_subset, defense_epochs=max(1, round(images / defense_subset)),
        defense_batch=min(256, defense_subset),
        wba_samples=wba_samples, wba_batch=wba_batch, wba_inner_steps=5,
        wba_epochs=max(1, round(images / wba_images_per_epoch)),
        # queries are forward-only (about a third of a training step's cost),
        # so they get 4x the images to time a comparable stretch
        query_samples=query_samples, queries=max(4, 4 * images // query_samples),
        test_images=images, eval_batch=4096 if cuda else 1024)


@dataclass
class Side:
    """One timed run: wall seconds and the work the model's forward counted."""
    seconds: float
    forward_calls: int
    images: int
    extra: dict = field(default_factory=dict)


@dataclass
class Measurement:
    workload: str
    suite: Side
    plain: Side
    #: what one "step" is for this workload (a training step, a delta update, a query...)
    step_name: str

    @property
    def ratio(self) -> float:
        """suite time / plain time for the same work: the framework's overhead factor."""
        return self.suite.seconds / self.plain.seconds


@dataclass
class Pair:
    """A workload, warmed up, ready for timed runs of either side."""
    workload: str
    step_name: str
    suite: Callable[[], Side]
    plain: Callable[[], Side]

    def measure(self, repeats: int = 1) -> Measurement:
        """`repeats` timed runs per side, keeping each side's fastest. The
        order alternates (suite first, then plain first...) so that a slow
        stretch of a shared machine does not always hit the same side."""
        best: dict[str, Side] = {}
        for r in range(repeats):
            order = ("suite", "plain") if r % 2 == 0 else ("plain", "suite")
            for side in order:
                run = getattr(self, side)()
                if side not in best or run.seconds < best[side].seconds:
                    best[side] = run
        return Measurement(self.workload, best["suite"], best["plain"], self.step_name)


class ForwardCounter:
    """Counts forward calls and images of one model (a forward pre-hook)."""

    def __init__(self, model: torch.nn.Module):
        self.calls = self.images = 0
        self.enabled = False
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        if self.enabled:
            self.calls += 1
            self.images += int(args[0].shape[0])

    @contextlib.contextmanager
    def counting(self):
        self.calls = self.images = 0
        self.enabled = True
        try:
            yield self
        finally:
            self.enabled = False
            self._handle.remove()


class Bench:
    """Everything one architecture's workloads share: the data module (on the
    device), the trigger, poisoned indices, the trainer factory and a model
    builder."""

    def __init__(self, arch: str, device: torch.device, sizes: Sizes, channels: int, image_size: int):
        self.arch, self.device, self.sizes = arch, device, sizes
        self.cuda = device.type == "cuda"
        self.dm = SyntheticDataModule(num_train=sizes.train_images, num_test=sizes.test_images, num_classes=10,
                                      channels=channels, size=image_size, batch_size=sizes.train_batch)
        if channels == 3:
            # the CIFAR-10 module's augmentation, so CIFAR-shaped runs pay its cost
            self.dm.crop_padding, self.dm.horizontal_flip = 4, True
        self.dm.device = device  # batches served where the model runs, as the cell does
        self.dm.eval_batch_size = sizes.eval_batch
        self.trainers = TrainerFactory("cuda" if self.cuda else "cpu", progress=False)
        #: bf16 autocast where the suite trains in "bf16-mixed" (GPUs), fp32 elsewhere
        self.train_autocast = self.trainers.precision == "bf16-mixed"
        self.trigger = build_trigger("badnets", self.dm.image_shape, size=3)
        self.poison_idx = self.dm.poison_indices(POISON_RATE, TARGET_LABEL, SEED)

    def new_model(self):
        """A freshly initialised model on the device, as the cell's
        `load_model` hands one to a stage; the same seed on both sides."""
        torch.manual_seed(SEED)
        c, h, _ = self.dm.image_shape
        return build_model(self.arch, self.dm.num_classes, c, h, self.dm.mean, self.dm.std).to(self.device)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, model: torch.nn.Module, run: Callable[[], dict | None]) -> Side:
        """Time `run()` (wall seconds, device synchronised on both ends) and
        count what the model's forward saw meanwhile."""
        counter = ForwardCounter(model)
        with counter.counting():
            self.sync()
            start = time.perf_counter()
            extra = run()
            self.sync()
            seconds = time.perf_counter() - start
        return Side(seconds, counter.calls, counter.images, extra or {})

    def autocast(self):
        if self.train_autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def plain_step(self, model, opt, sched, x: torch.Tensor, y: torch.Tensor) -> None:
        """One plain-PyTorch training step as the suite's trainer takes it:
        the data module's augmentation, autocast where the suite uses it,
        cross-entropy, SGD, and the per-step learning-rate schedule."""
        x = self.dm.augment(x)
        with self.autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    def subset(self, count: int) -> torch.Tensor:
        """The first `count` dataset indices in a seeded order (warm-up data)."""
        return torch.randperm(self.dm.num_train, generator=torch.Generator().manual_seed(SEED))[:count].sort().values
