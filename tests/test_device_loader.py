"""The device loader serves exactly DataLoader's batches and leaves every
random stream where DataLoader leaves it, so results do not depend on it."""
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.device_loader import DeviceLoader
from datamodules.tensor_dataset import IndexedImages, keep_batch


def _dataset(n=103):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g)
    return IndexedImages(images, torch.arange(n) % 7, torch.arange(1000, 1000 + n))


@pytest.mark.parametrize("shuffle,drop_last", [(True, False), (True, True), (False, False)])
def test_same_batches_and_random_state_as_dataloader(shuffle, drop_last):
    data = _dataset()
    ours = DeviceLoader(data, 16, shuffle=shuffle, drop_last=drop_last,
                        generator=torch.Generator().manual_seed(3) if shuffle else None)
    theirs = DataLoader(data, 16, shuffle=shuffle, drop_last=drop_last, collate_fn=keep_batch,
                        generator=torch.Generator().manual_seed(3) if shuffle else None)
    assert len(ours) == len(theirs)
    for epoch in range(3):
        torch.manual_seed(epoch)
        a = list(ours)
        after_ours = torch.get_rng_state()
        torch.manual_seed(epoch)
        b = list(theirs)
        assert torch.equal(torch.get_rng_state(), after_ours)  # the global stream too
        assert len(a) == len(b)
        for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
            assert xa.dtype == torch.float32 and xa.max() <= 1.0
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    if shuffle:
        assert torch.equal(ours.generator.get_state(), theirs.generator.get_state())


def test_a_shuffled_loader_needs_a_seed():
    with pytest.raises(ValueError, match="seeded generator"):
        DeviceLoader(_dataset(), 8, shuffle=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batches_live_on_the_device_and_images_stay_uint8_there():
    loader = DeviceLoader(_dataset(), 16, shuffle=True, generator=torch.Generator().manual_seed(0), device="cuda")
    assert loader.images.dtype == torch.uint8 and loader.images.is_cuda
    x, y, i = next(iter(loader))
    assert x.is_cuda and y.is_cuda and i.is_cuda
