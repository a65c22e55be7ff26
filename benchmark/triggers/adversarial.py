"""The adversarial machinery of the Label-Consistent backdoor (LC; Turner,
Tsipras & Madry 2019), used by `benchmark.triggers.label_consistent`:

- `pgd_linf`: untargeted L-inf PGD, cross-entropy ascent on the true label,
  optionally from a uniform random start in the eps-ball;
- `adversarial_training`: Madry's PGD adversarial training of the robust
  model on the whole training set (cross-entropy on the PGD examples only,
  SGD with momentum and weight decay, cosine decay per step);
- `craft_adversarial`: the PGD adversarial examples of the poisoned samples
  on the robust model (eval mode, no random start), stored as uint8.

Reference (BackdoorBench, cited by file): adversarial images
`resource/label-consistent/craft_adv_dataset.py` (L-inf PGD on a robust
ResNet-18, no random start, model in eval mode, saved as uint8 by truncation
`(x * 255).type(torch.uint8)`); original: MadryLab/label-consistent-backdoor-code.
On a GPU the passes run under bf16 autocast, as the cell's training does.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F


def pgd_linf(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epsilon: float,
             step_size: float, steps: int, random_start: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L-inf PGD (cross-entropy ascent on the true labels) from
    `images` in [0, 1]; a uniform start in the eps-ball when `random_start`
    (a generator on the images' device) is given. The model's mode is the
    caller's; the result is detached, in [0, 1] and within eps."""
    adversarial = images.detach().clone()
    if random_start is not None:
        noise = torch.rand(images.shape, generator=random_start, device=images.device, dtype=images.dtype)
        adversarial = (adversarial + (2 * noise - 1) * epsilon).clamp(0, 1)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.device.type == "cuda")
    for _ in range(steps):
        adversarial.requires_grad_(True)
        with autocast:
            loss = F.cross_entropy(model(adversarial), labels)
        (grad,) = torch.autograd.grad(loss, adversarial)
        adversarial = adversarial.detach() + step_size * grad.sign()
        adversarial = (images + (adversarial - images).clamp(-epsilon, epsilon)).clamp(0, 1)
    return adversarial.detach()


@contextmanager
def input_gradients_only(model: torch.nn.Module):
    """Freeze the parameters while PGD differentiates with respect to the
    input (no weight gradients are computed), then restore their flags."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def adversarial_training(model: torch.nn.Module, ctx, *, epochs: int, epsilon: float, step_size: float, steps: int,
                         lr: float, momentum: float, weight_decay: float, batch_size: int,
                         random_start: torch.Generator, max_steps: int | None = None, name: str = "lc") -> None:
    """Madry PGD adversarial training of `model` on the whole training set of
    the preparation context `ctx`: every step trains on PGD examples of the
    batch (cross-entropy only). `random_start` (a generator on `ctx.device`)
    draws PGD's uniform starts; `max_steps` caps the steps; `name` prefixes
    the log lines. The model is left in eval mode."""
    device = torch.device(ctx.device)
    # The last partial batch of an epoch is dropped (a batch of one
    # sample would break BatchNorm), unless the set is a single batch.
    drop_last = len(ctx.images) > batch_size
    steps_per_epoch = len(ctx.images) // batch_size if drop_last else 1
    total = epochs * steps_per_epoch
    if max_steps is not None:
        total = min(total, max_steps)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    ctx.log(f"{name}: adversarial training of the robust model, {total} steps "
            f"(PGD-{steps}, eps {epsilon * 255:.3g}/255)")
    progress = ctx.loop_checkpoint(model=model, optimizer=optimizer, schedule=schedule, random_start=random_start)
    position = progress.resume()  # {} unless an earlier run of this stage was interrupted
    step = position.get("step", 0)
    for epoch in range(position.get("epoch", 0), epochs):
        if step >= total:
            break
        started, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
        for x, y, _ in ctx.batches(batch_size, epoch=epoch, drop_last=drop_last):
            if step >= total:
                break
            model.eval()
            with input_gradients_only(model):
                x_adv = pgd_linf(model, x, y, epsilon, step_size, steps, random_start=random_start)
            model.train()
            with autocast:
                logits = model(x_adv)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
        ctx.log(f"{name}: robust epoch {epoch + 1}/{epochs}: adversarial loss "
                f"{loss_sum / max(seen, 1):.4f}, adversarial accuracy {correct / max(seen, 1):.3f}, "
                f"{time.perf_counter() - started:.1f}s")
        progress.epoch_end(epoch + 1, last=step >= total or epoch + 1 == epochs, epoch=epoch + 1, step=step)
    model.eval()


def craft_adversarial(model: torch.nn.Module, ctx, indices: torch.Tensor, image_shape: tuple[int, int, int], *,
                      epsilon: float, step_size: float, steps: int, batch_size: int,
                      quantization: Literal["truncate", "round"] = "truncate", name: str = "lc") -> torch.Tensor:
    """PGD adversarial examples of the training samples of `ctx` at `indices`
    on `model` (eval mode, no random start); uint8 (N, *image_shape), by
    truncation (the reference's uint8 cast) or rounding per `quantization`.
    `name` prefixes the log lines."""
    model.eval()
    out = torch.empty((len(indices), *image_shape), dtype=torch.uint8)
    started, clean_correct, adv_correct = time.perf_counter(), 0, 0
    batches = math.ceil(len(indices) / batch_size)
    ctx.log(f"{name}: crafting {len(indices)} adversarial images (PGD-{steps}, eps {epsilon * 255:.3g}/255)")
    with input_gradients_only(model):
        for b, start in enumerate(range(0, len(indices), batch_size)):
            chunk = indices[start:start + batch_size]
            x = ctx.float_images(chunk)
            y = ctx.labels[chunk].to(x.device)
            x_adv = pgd_linf(model, x, y, epsilon, step_size, steps)
            quantized = (x_adv * 255).round() if quantization == "round" else x_adv * 255
            out[start:start + len(chunk)] = quantized.to(torch.uint8).cpu()  # the cast truncates
            with torch.no_grad():
                clean_correct += int((model(x).argmax(1) == y).sum())
                adv_correct += int((model(out[start:start + len(chunk)].to(x.device).float() / 255)
                                    .argmax(1) == y).sum())
            if (b + 1) % max(1, batches // 10) == 0 or b + 1 == batches:
                ctx.log(f"{name}: crafted {start + len(chunk)}/{len(indices)} "
                        f"({time.perf_counter() - started:.1f}s)")
    ctx.log(f"{name}: robust model accuracy on the poisoned samples: clean {clean_correct / len(indices):.3f}, "
            f"adversarial {adv_correct / len(indices):.3f}")
    return out.contiguous()
