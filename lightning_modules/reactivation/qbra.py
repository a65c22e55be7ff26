"""QBRA, query-based re-activation (Zhu, Liang & Wu, NeurIPS 2024).

A universal L-inf Square Attack (Andriushchenko et al., ECCV 2020): one delta
shared by the whole batch of triggered training samples; one query is one
oracle call on that batch. delta starts as vertical stripes of +/-eps per
(channel, column); each iteration sets a random square window to a random
+/-eps per channel and keeps it only if the summed targeted cross-entropy
sum_i -log p_t(x_i + delta) decreased. Stops at the query budget or once the
batch ASR exceeds `stop_asr`. Snapshots of delta at the `curve` query counts
give the ASR-vs-queries curve (`checkpoints()`).

The runner gives it a `QueryOracle(victim, max_queries)`;
the method never sees the victim itself.
"""
from __future__ import annotations

import bisect
import math

import torch

from benchmark.errors import ConfigError
from benchmark.extension.schema import ClosedUnitInterval, Fraction, PositiveFloat, PositiveInt
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import QUERY, Norm, ReactivationModule
from lightning_modules.reactivation.oracle import QueryOracle

MAX_QUERIES = 10_000
# Iterations of a 10,000-iteration run after which the window fraction p
# halves (Square Attack's schedule); rescaled for other budgets.
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(iteration: int, max_queries: int, p_init: float) -> float:
    """Fraction of the image area the square window covers at `iteration`."""
    scaled = int(iteration / max_queries * 10_000)
    return p_init / 2 ** bisect.bisect_left(HALVINGS, scaled)


@REACTIVATIONS.register("qbra")
class QueryReactivation(ReactivationModule):
    access = QUERY

    def __init__(self, oracle: QueryOracle, image_shape: tuple[int, int, int], target_label: int = 0,
                 epsilon: PositiveFloat = 0.05, norm: Norm = "linf", seed: int = 0, num_samples: PositiveInt = 500,
                 batch_size: PositiveInt = 500, epochs: PositiveInt = 1, max_queries: PositiveInt = MAX_QUERIES,
                 p_init: Fraction = 0.1, stop_asr: ClosedUnitInterval = 0.99,
                 curve: tuple[PositiveInt, ...] = (1000, 3000, 5000, 7000, 10000)):
        # The norm comes from the cell, shared by every method, so it is
        # checked here rather than narrowed in the hint.
        if norm != "linf":
            raise ConfigError(f"qbra: norm={norm!r} is not allowed; must be 'linf' (qbra implements the L-inf "
                              f"Square Attack only)")
        super().__init__(image_shape, target_label, epsilon, norm, seed, num_samples, batch_size, epochs)
        self.oracle = oracle  # a plain object, so never registered, moved or saved as a module
        self.automatic_optimization = False
        self.gen = torch.Generator().manual_seed(seed)
        c, _, w = image_shape
        signs = torch.randint(0, 2, (1, c, 1, w), generator=self.gen) * 2 - 1
        with torch.no_grad():
            self.delta.copy_(signs.float().expand_as(self.delta) * epsilon)
        self.delta.requires_grad_(False)  # updated by search, never by gradients
        self.loss_history: list[float] = []  # best summed CE (nats) after each query
        self.queries_used = 0
        self.stopped_early = False
        self._snapshots: dict[int, torch.Tensor] = {}

    def configure_optimizers(self):
        return None

    def _done(self) -> bool:
        return self.stopped_early or self.queries_used >= self.hparams.max_queries or self.oracle.remaining <= 0

    def _score(self, x: torch.Tensor, delta: torch.Tensor) -> tuple[float, float]:
        """One query: summed -log p_t over the batch (nats) and the batch ASR."""
        probs = self.oracle((x + delta).clamp(0.0, 1.0))
        self.queries_used += 1
        t = self.hparams.target_label
        loss = -probs[:, t].double().clamp_min(1e-300).log().sum().item()
        return loss, (probs.argmax(dim=1) == t).float().mean().item()

    def _record(self, best_loss: float) -> None:
        self.loss_history.append(best_loss)
        if self.queries_used in self.hparams.curve:
            self._snapshots[self.queries_used] = self.final_delta().clone()

    def _propose(self) -> torch.Tensor:
        h = self.hparams
        c, height, width = self.delta.shape[1:]
        p = window_fraction(self.queries_used - 1, h.max_queries, h.p_init)
        side = max(1, min(round(math.sqrt(p * height * width)), min(height, width) - 1))
        r = int(torch.randint(0, height - side + 1, (1,), generator=self.gen))
        q = int(torch.randint(0, width - side + 1, (1,), generator=self.gen))
        cand = self.delta.detach().clone()
        window = cand[0, :, r:r + side, q:q + side]
        # Redraw a window identical to the current one: it would waste a query.
        while True:
            values = ((torch.randint(0, 2, (c, 1, 1), generator=self.gen) * 2 - 1) * h.epsilon).to(window)
            if not torch.equal(window, values.expand_as(window)):
                break
        window.copy_(values.expand_as(window))
        return cand

    @torch.no_grad()
    def training_step(self, batch, batch_idx):
        if self._done():
            return None
        x = batch[0]
        # A new batch needs its own reference loss, so the history may rise at
        # batch boundaries; within a batch it never increases.
        best_loss, best_asr = self._score(x, self.delta)
        self._record(best_loss)
        while best_asr <= self.hparams.stop_asr and not self._done():
            cand = self._propose()
            loss, asr = self._score(x, cand)
            if loss < best_loss:
                self.delta.copy_(cand)
                best_loss, best_asr = loss, asr
            self._record(best_loss)
        self.stopped_early = best_asr > self.hparams.stop_asr
        self.log("react/queries", float(self.queries_used), reduce_fx="max", on_step=False, on_epoch=True)
        self.log("react/loss", best_loss, prog_bar=True, on_step=False, on_epoch=True)
        return None

    def checkpoints(self) -> dict[str, torch.Tensor]:
        """delta at each curve point reached; after an early stop, later points
        within the budget hold the final delta (the search would not move)."""
        out = {}
        for q in sorted(self.hparams.curve):
            if q in self._snapshots:
                out[f"{q}q"] = self._snapshots[q]
            elif self.stopped_early and q <= self.hparams.max_queries:
                out[f"{q}q"] = self.final_delta().clone()
        return out
