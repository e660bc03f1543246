"""``train``: the genotype's own network trained from scratch on D~ and
scored by its validation accuracy (the early-stopping evaluation of DC-NAS
Eq. 8, and the fitness of every multi-trial method in the survey).

The budget is the number of epochs (multi-fidelity: a strategy may pass a
smaller one); the network is built with the space's ``build_network`` under
the trial's seed and trained with the space's ``training_recipe`` (DARTS's
drop-path, auxiliary head and cutout on cells) by nas_core.train.fit: SGD
with momentum, cosine schedule to 0 over the budget. ``score`` is the last
epoch's validation accuracy (``best_val_acc`` is reported too: choosing by
the best epoch would peek at the validation curve)."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import Field
from torch import nn

from nas_core.evaluators.base import EVALUATORS, EvalData, Evaluator
from nas_core.sections import Section
from nas_core.train.fit import FitSettings, fit, seeded


class TrainConfig(Section):
    """``epochs``: the default budget; the optimiser settings of the
    from-scratch training; ``augment``: the source's standard augmentation."""

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(4e-5, ge=0)
    augment: bool = False


@EVALUATORS.register("train")
class TrainEvaluator(Evaluator):
    name = "train"
    Config = TrainConfig

    def settings(self, seed: int, budget: Optional[int]) -> FitSettings:
        c = self.config
        epochs = c.epochs if budget is None else int(budget)
        if epochs < 1:
            raise ValueError(f"train evaluator: budget = {budget!r} epochs; allowed: an integer >= 1")
        return FitSettings(epochs=epochs, batch_size=c.batch_size, lr=c.lr, momentum=c.momentum,
                           weight_decay=c.weight_decay, augment=c.augment, seed=seed,
                           **self.space.training_recipe())

    def evaluate(self, genotype: Any, data: EvalData, seed: int, budget: Optional[int] = None,
                 supernet: Optional[nn.Module] = None) -> dict[str, float]:
        settings = self.settings(seed, budget)
        with seeded(seed):
            model = self.space.build_network(genotype)
        result = fit(model, data.train, data.val, settings, self.device, dataset=data.dataset,
                     on_epoch=self.on_epoch)
        last = result.history[-1]
        return {"score": result.val_acc, "val_acc": result.val_acc, "best_val_acc": result.best_val_acc,
                "train_loss": last["train_loss"], "train_acc": last["train_acc"], "val_loss": last["val_loss"],
                "epochs": float(settings.epochs)}
