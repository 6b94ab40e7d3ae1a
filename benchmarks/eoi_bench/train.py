"""The training loop shared by ``eoi demo``, ``eoi bench deep`` and ``eoi bench angles``.

Plain minibatch SGD (optionally with momentum) on the cross-entropy loss.
After every epoch (and once before training) the loss on the *whole*
training set and the test accuracy are measured in evaluation mode, so the
curves are exact rather than running averages.  A non-finite loss stops the
run and marks it as diverged instead of training on NaNs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset

__all__ = ["History", "evaluate", "train"]


@dataclass
class History:
    """What one training run measured.

    Attributes
    ----------
    train_loss : list of float
        Cross-entropy on the whole training set after each epoch; index 0 is at initialisation.
    test_accuracy : list of float
        Test accuracy at the same points.
    step_loss : list of float
        Minibatch loss of every SGD step.
    seconds : float
        Wall time of the training loop, evaluations included.
    diverged : bool
        True when a loss became NaN or infinite (training stopped there).
    """

    train_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    diverged: bool = False

    @property
    def final_loss(self) -> float:
        return self.train_loss[-1] if self.train_loss else math.nan

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1] if self.test_accuracy else math.nan


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train()
    return loss_sum / len(x), correct / len(x)


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    momentum: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    description: str = "",
) -> History:
    """Train ``model`` on ``data`` with minibatch SGD; return its :class:`History`.

    The minibatch order is drawn from ``torch.Generator().manual_seed(seed)``,
    so two runs with the same seed see the same batches.
    """
    from tqdm.auto import tqdm

    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    optimiser = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    history = History()
    start = time.perf_counter()

    def record() -> bool:
        loss, _ = evaluate(model, x_train, y_train)
        _, accuracy = evaluate(model, x_test, y_test)
        history.train_loss.append(loss)
        history.test_accuracy.append(accuracy)
        return math.isfinite(loss)

    record()
    bar = tqdm(total=epochs * steps_per_epoch, desc=description, disable=not progress,
               leave=True, dynamic_ncols=True, unit="step")
    try:
        for _ in range(epochs):
            permutation = torch.randperm(len(x_train), generator=order)
            for index in range(steps_per_epoch):
                batch = permutation[index * batch_size : (index + 1) * batch_size]
                loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
                value = loss.item()
                history.step_loss.append(value)
                if not math.isfinite(value):
                    history.diverged = True
                    break
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                bar.update(1)
            if history.diverged or not record():
                history.diverged = True
                break
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", acc=f"{history.test_accuracy[-1]:.3f}")
    finally:
        bar.close()
    history.seconds = time.perf_counter() - start
    return history
