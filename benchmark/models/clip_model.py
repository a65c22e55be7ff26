"""CLIP models through open_clip, behind the suite's pixel-space conventions.

`ClipModel` takes images in [0, 1] (grey images are repeated to three
channels, other sizes are resized to the tower's input size) and normalises
them with the model's own mean/std, so triggers, perturbations and epsilons
live in [0, 1] pixel space as for the classifiers. `ZeroShotClassifier`
turns it into a classifier over a labelled set: logits = exp(logit_scale) *
cos(E_I(x), T_k), with T_k the class's template-averaged text embedding
(each template embedding L2-normalised, averaged, renormalised: CleanCLIP
src/evaluate.py, open_clip zero_shot_classifier.py). Every stage that needs a
classifier (evaluation, BEC, re-activation, the query oracle, the controls)
gets a ZeroShotClassifier, so none of them has a CLIP-specific path.

Architectures: any open_clip model name (`open_clip.list_models()`), plus
`tiny`, a ViT of about 3.5M parameters (mostly the 49,408-token embedding
table) built from the `ViT-S-32-alt` config with overrides, for tests and
the CPU demo. Weights (`pretrained`):
- None: random initialisation;
- a local file (.safetensors, or .pt/.pth/.bin holding tensors only, with or
  without a `state_dict` key or a `module.` prefix, e.g. CleanCLIP's
  checkpoints): read with safetensors or `torch.load(weights_only=True)`, so
  nothing in the file is ever executed; a TorchScript archive or a pickle with
  objects is refused with a message saying how to convert it;
- an open_clip hub tag (`openai`, `laion2b_s34b_b79k`, ...): open_clip
  downloads it where a network exists.

BEC layers: the outputs of the image tower's blocks (ViT residual blocks,
ModifiedResNet bottlenecks). A ViT block outputs (batch, tokens, width); BEC
ranks channels on dim 1, so each block feeds a parameter-free tap that sees
(batch, width, tokens); the taps hold no weights, so state-dict names are
open_clip's own and checkpoints load unchanged.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError

TINY_ARCH = "tiny"
#: the built-in config the tiny model starts from, and its overrides (open_clip
#: replaces top-level config keys wholesale); the patch size follows the
#: image size (4 x 4 patches) and is filled in by `clip_config`
TINY_BASE = "ViT-S-32-alt"
TINY_OVERRIDES = {
    "embed_dim": 64,
    "vision_cfg": {"layers": 3, "width": 128, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: CLIP's normalisation (OpenAI); open_clip models carry their own
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def is_local_weights(pretrained: str | None) -> bool:
    return pretrained is not None and (Path(pretrained).suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained)


_HASHES: dict[tuple, str] = {}


def weights_identity(pretrained: str | None) -> dict | None:
    """What identifies the initial weights in a store key: a file's content
    hash (never its path), or the hub tag; None for random initialisation."""
    if pretrained is None:
        return None
    if not is_local_weights(pretrained):
        return {"tag": pretrained}
    path = Path(pretrained)
    if not path.is_file():
        raise ConfigError(f"pretrained checkpoint {pretrained} does not exist (give a file: .safetensors, or "
                          f".pt/.bin holding a state dict)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:  # hashing a 400 MB checkpoint takes about a second; once per process
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return {"sha256": _HASHES[key]}


def clip_config(arch: str, image_size: int, overrides: dict | None = None) -> tuple[str, dict]:
    """(open_clip model name, keyword overrides) for `arch`."""
    overrides = dict(overrides or {})
    if arch == TINY_ARCH:
        patch = max(1, image_size // 4)
        vision = {**TINY_OVERRIDES["vision_cfg"], "image_size": image_size, "patch_size": patch,
                  **overrides.pop("vision_cfg", {})}
        text = {**TINY_OVERRIDES["text_cfg"], **overrides.pop("text_cfg", {})}
        return TINY_BASE, {"embed_dim": TINY_OVERRIDES["embed_dim"], **overrides, "vision_cfg": vision,
                           "text_cfg": text}
    import open_clip

    if arch not in open_clip.list_models():
        raise ConfigError(f"CLIP architecture {arch!r} unknown; use 'tiny' or an open_clip model name, e.g. "
                          f"RN50, ViT-B-32 (open_clip.list_models() lists {len(open_clip.list_models())})")
    return arch, overrides


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, never executing anything in it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (a pickle with objects, a TorchScript archive, garbage)
            raise ConfigError(
                f"{path}: not a plain tensor checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                f"only tensors are loaded (weights_only), nothing in a file is executed. Convert it once where "
                f"you trust it: save model.state_dict() with safetensors.torch.save_file") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # CleanCLIP / Lightning layouts
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: expected a mapping of parameter names to tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _emit_tap(block: nn.Module, _inputs, output):
    """Forward hook of an image-tower block: hand its output to the block's
    parameter-free tap, channels on dim 1 (a module-level function, not a
    closure, so a deep copy of the model taps its own blocks)."""
    out = output[0] if isinstance(output, tuple) else output
    if out.dim() == 3:
        out = out.transpose(1, 2) if block.bec_batch_first else out.permute(1, 2, 0)
    block.bec_tap(out)


class ClipModel(nn.Module):
    def __init__(self, clip: nn.Module, tokenizer, context_length: int, in_channels: int):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.in_channels = in_channels
        visual = clip.visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = getattr(visual, "image_mean", None) or CLIP_MEAN
        std = getattr(visual, "image_std", None) or CLIP_STD
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self._bec_layers = self._add_taps()

    def _add_taps(self) -> list[str]:
        visual = self.clip.visual
        if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
            prefix, blocks = "clip.visual.transformer.resblocks", list(visual.transformer.resblocks)
            batch_first = getattr(visual.transformer, "batch_first", True)
        elif all(hasattr(visual, f"layer{i}") for i in range(1, 5)):
            blocks, names = [], []
            for i in range(1, 5):
                for j, block in enumerate(getattr(visual, f"layer{i}")):
                    blocks.append(block)
                    names.append(f"clip.visual.layer{i}.{j}")
            for block in blocks:
                self._tap(block, True)
            return [f"{n}.bec_tap" for n in names]
        else:
            return []  # an image tower of unknown layout: BEC reports the missing layers
        for block in blocks:
            self._tap(block, batch_first)
        return [f"{prefix}.{i}.bec_tap" for i in range(len(blocks))]

    @staticmethod
    def _tap(block: nn.Module, batch_first: bool) -> None:
        block.bec_tap = nn.Identity()
        block.bec_batch_first = batch_first
        block.register_forward_hook(_emit_tap)

    @property
    def bec_layers(self) -> list[str]:
        if not self._bec_layers:
            raise ConfigError(f"BEC layers of the image tower {type(self.clip.visual).__name__} are unknown "
                              f"(known: open_clip ViT and ModifiedResNet towers)")
        return list(self._bec_layers)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any size and 1 or 3 channels -> the tower's normalised input."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings of [0, 1] images."""
        return F.normalize(self.clip.encode_image(self.pixels(x)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings of token ids."""
        return F.normalize(self.clip.encode_text(tokens.long()), dim=-1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), context_length=self.context_length)


class ZeroShotClassifier(nn.Module):
    """A ClipModel as a classifier over `class_prompts` (one list of prompts
    per class): logits = exp(logit_scale) * cos(image, class embedding)."""

    def __init__(self, clip: ClipModel, class_prompts: list[list[str]]):
        super().__init__()
        if not class_prompts or not all(class_prompts):
            raise ConfigError("zero-shot classification needs at least one prompt per class")
        self.clip = clip
        counts = {len(p) for p in class_prompts}
        if len(counts) != 1:
            raise ConfigError("every class needs the same number of prompts (one per template)")
        self.num_templates = counts.pop()
        tokens = clip.tokenize([p for prompts in class_prompts for p in prompts])
        self.register_buffer("class_tokens", tokens, persistent=False)
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the class embeddings (after the text tower changed)."""
        was_training = self.clip.training
        self.clip.eval()
        parts = [self.clip.encode_text(self.class_tokens[i:i + 1024]) for i in range(0, len(self.class_tokens), 1024)]
        self.clip.train(was_training)
        per_template = torch.cat(parts).view(-1, self.num_templates, parts[0].shape[-1])
        self.class_embeddings = F.normalize(per_template.mean(dim=1), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = self.clip.encode_image(x)
        return self.clip.logit_scale.exp() * image @ self.class_embeddings.to(image.dtype).t()

    @property
    def bec_layers(self) -> list[str]:
        return [f"clip.{name}" for name in self.clip.bec_layers]

    def submodule(self, name: str) -> nn.Module:
        return self.get_submodule(name)


def build_clip(arch: str, image_size: int, in_channels: int, pretrained: str | None = None,
               overrides: dict | None = None, device: str | torch.device = "cpu") -> ClipModel:
    """A ClipModel; `device="meta"` builds it without weights (planning)."""
    import logging

    import open_clip

    name, kwargs = clip_config(arch, image_size, overrides)
    tag = None if pretrained is None or is_local_weights(pretrained) or device == "meta" else pretrained
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # "initialised randomly" notice
    try:
        if device == "meta":
            with torch.device("meta"):
                clip = open_clip.create_model(name, pretrained=None, device="meta", **kwargs)
        else:
            clip = open_clip.create_model(name, pretrained=tag, **kwargs)
    except RuntimeError as exc:
        if tag is not None:
            raise ConfigError(f"could not get pretrained weights {tag!r} for {arch} ({str(exc).splitlines()[0]}); "
                              f"without a network, pass a local checkpoint file as pretrained") from None
        raise
    if pretrained is not None and is_local_weights(pretrained) and device != "meta":
        state = read_state_dict(pretrained)
        own = clip.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        misshapen = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or misshapen:
            raise ConfigError(f"{pretrained} does not fit open_clip {name}: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, other shapes {misshapen[:3]} (Hugging Face transformers layouts "
                              f"do not match open_clip's names)")
        clip.load_state_dict(state, strict=True)
    text_cfg = kwargs.get("text_cfg") or {}
    context_length = text_cfg.get("context_length") or getattr(clip, "context_length", 77)
    tokenizer = open_clip.get_tokenizer(name) if arch != TINY_ARCH else open_clip.get_tokenizer(TINY_BASE)
    return ClipModel(clip, tokenizer, int(context_length), in_channels)
