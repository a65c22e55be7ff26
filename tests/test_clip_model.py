"""CLIP through open_clip on the tiny configuration: the contrastive loss
against a hand-computed case, zero-shot prediction on planted embeddings,
template averaging, safe checkpoint loading, the BEC taps, and CleanCLIP's
optimiser and schedule."""
from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import ConfigError
from benchmark.measures.features import capture
from benchmark.models.clip_model import ZeroShotClassifier, build_clip, read_state_dict, weights_identity
from lightning_modules.clip.base import MAX_LOGIT_SCALE, NO_DECAY_MARKERS, clip_loss, in_modal_loss, warmup_cosine

CLASSES = ["shirt", "bag", "dress"]
TEMPLATES = ["a photo of a {}.", "a picture of a {}."]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_clip("tiny", 28, 1).eval()


def test_clip_loss_matches_a_hand_computed_case():
    # two pairs in 2-D: image i matches text i; logit scale log(2) -> factor 2
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(math.log(2.0))
    # logits = 2 * image @ text^T = [[2, 1.2], [0, 1.6]]
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(1.2)))      # image 0 -> text 0
    row1 = -math.log(math.exp(1.6) / (math.exp(0) + math.exp(1.6)))    # image 1 -> text 1
    col0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))        # text 0 -> image 0
    col1 = -math.log(math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)))  # text 1 -> image 1
    expected = ((row0 + row1) / 2 + (col0 + col1) / 2) / 2
    assert clip_loss(image, text, scale).item() == pytest.approx(expected, rel=1e-6)
    # the in-modal term is one direction only (CleanCLIP's get_loss)
    assert in_modal_loss(image, text, scale).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_zero_shot_predicts_the_planted_class_with_scaled_cosine_logits(tiny):
    model = ZeroShotClassifier(tiny, [[t.format(c) for t in TEMPLATES] for c in CLASSES])
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        planted = tiny.encode_image(x)            # class k's embedding := image k's embedding
        model.class_embeddings = planted.flip(0)  # so image k must be predicted as class 2 - k
        logits = model(x)
    assert logits.argmax(1).tolist() == [2, 1, 0]
    expected = tiny.logit_scale.exp() * planted @ planted.flip(0).t()
    torch.testing.assert_close(logits, expected)


def test_class_embedding_is_the_renormalised_mean_of_normalised_template_embeddings(tiny):
    model = ZeroShotClassifier(tiny, [[t.format(c) for t in TEMPLATES] for c in CLASSES])
    with torch.no_grad():
        for k, name in enumerate(CLASSES):
            per_template = tiny.encode_text(tiny.tokenize([t.format(name) for t in TEMPLATES]))
            torch.testing.assert_close(per_template.norm(dim=1), torch.ones(2))
            expected = F.normalize(per_template.mean(0), dim=0)
            torch.testing.assert_close(model.class_embeddings[k], expected, atol=1e-5, rtol=1e-5)


def test_grey_images_are_the_same_as_their_three_channel_copy(tiny):
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(tiny.encode_image(x), tiny.encode_image(x.expand(-1, 3, -1, -1)))


def _outputs(model, x):
    with torch.no_grad():
        return model.encode_image(x)


def test_checkpoints_load_from_safetensors_and_weights_only_files(tiny, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny.clip.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    # CleanCLIP's layout: {"epoch", "state_dict": {"module." + name: tensor}}
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "cleanclip.pt")
    x = torch.rand(2, 1, 28, 28)
    for name in ("w.safetensors", "cleanclip.pt"):
        loaded = build_clip("tiny", 28, 1, pretrained=str(tmp_path / name)).eval()
        torch.testing.assert_close(_outputs(loaded, x), _outputs(tiny, x))
    identity = weights_identity(str(tmp_path / "w.safetensors"))
    assert set(identity) == {"sha256"} and str(tmp_path) not in str(identity)


class _Payload:
    """Unpickling this runs code (it would create a file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": {"visual.proj": _Payload(str(marker))}}, f)
    with pytest.raises(ConfigError, match="weights_only|nothing in a file is executed"):
        read_state_dict(tmp_path / "evil.pt")
    with pytest.raises(ConfigError):
        build_clip("tiny", 28, 1, pretrained=str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_keys(tmp_path):
    from safetensors.torch import save_file

    save_file({"token_embedding.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="does not fit open_clip"):
        build_clip("tiny", 28, 1, pretrained=str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="does not exist"):
        weights_identity(str(tmp_path / "missing.safetensors"))


def test_unknown_architecture_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown; use 'tiny' or an open_clip model name"):
        build_clip("ResNet-9000", 224, 3)


def test_bec_taps_see_channels_first_and_leave_state_dict_names_alone(tiny):
    import copy

    model = ZeroShotClassifier(tiny, [[c] for c in CLASSES])
    assert all(".bec_tap" not in k for k in tiny.clip.state_dict())
    x = torch.rand(4, 1, 28, 28)
    for candidate in (model, copy.deepcopy(model)):
        with capture(candidate, candidate.bec_layers) as out, torch.no_grad():
            candidate(x)
        width = tiny.clip.visual.transformer.width
        tokens = 1 + (28 // tiny.clip.visual.patch_size[0]) ** 2 if hasattr(tiny.clip.visual, "patch_size") else None
        assert len(out) == len(tiny.clip.visual.transformer.resblocks)
        for feature in out.values():
            assert feature.shape[:2] == (4, width)
            if tokens:
                assert feature.shape[2] == tokens


def test_rn50_bec_layers_are_its_bottlenecks():
    model = build_clip("RN50", 224, 3, device="meta")
    assert len(model.bec_layers) == 3 + 4 + 6 + 3
    assert model.bec_layers[0] == "clip.visual.layer1.0.bec_tap"


def test_cleanclip_schedule_and_weight_decay_groups(tiny):
    # linear warm-up (step + 1) / warmup, then cosine to 0 (CleanCLIP src/scheduler.py)
    assert warmup_cosine(0, 50, 1000) == pytest.approx(1 / 50)
    assert warmup_cosine(49, 50, 1000) == pytest.approx(1.0)
    assert warmup_cosine(50, 50, 1000) == pytest.approx(1.0)
    assert warmup_cosine(525, 50, 1000) == pytest.approx(0.5)
    assert warmup_cosine(999, 50, 1000) == pytest.approx(0.0, abs=1e-4)
    assert NO_DECAY_MARKERS == ("bn", "ln", "bias", "logit_scale")
    assert MAX_LOGIT_SCALE == pytest.approx(math.log(100), abs=1e-4)
    names = [n for n, _ in tiny.clip.named_parameters()]
    assert "logit_scale" in names and any(".ln_1." in n for n in names)
