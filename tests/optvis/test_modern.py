"""The beyond-the-reference options: they run, keep images standardised, raise the
map's activation, and the diversity penalty pushes group members apart."""

from __future__ import annotations

import torch

from convscope.optvis import objectives as obj
from convscope.optvis.modern import FourierImage, diversity, gaussian_blur, modern_ascent, random_transform


def test_fourier_image_is_standardised_and_1_over_f():
    image = FourierImage(3, generator=torch.Generator().manual_seed(0)).images().detach()
    flat = image.reshape(3, -1)
    assert image.shape == (3, 1, 28, 28)
    assert torch.allclose(flat.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(3), atol=5e-3)
    # 1/f: low frequencies dominate, so neighbouring pixels are strongly correlated
    assert float(torch.corrcoef(torch.stack([image[:, 0, :, :-1].flatten(), image[:, 0, :, 1:].flatten()]))[0, 1]) > 0.5
    rgb = FourierImage(2, (20, 30), 3, generator=torch.Generator().manual_seed(1)).images()
    assert rgb.shape == (2, 3, 20, 30)
    assert torch.allclose(rgb.reshape(2, -1).std(1, unbiased=False), torch.ones(2), atol=5e-3)


def test_blur_and_transforms_keep_shape_and_mass():
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    blurred = gaussian_blur(x, 0.5)
    assert torch.isclose(blurred.sum(), torch.tensor(2.0)) and float(blurred.max()) < 1.0
    moved = random_transform(torch.randn(4, 1, 28, 28), torch.Generator().manual_seed(0))
    assert moved.shape == (4, 1, 28, 28)


def test_options_raise_activation(shipped_model):
    target = obj.channels("Conv2D_2", [0, 1, 2, 3])
    for kwargs in ({"parametrisation": "fourier", "optimizer": "adam"}, {"optimizer": "adam"},
                   {"transforms": True, "tv": 0.1, "l1": 0.05, "blur_every": 4}):
        result = modern_ascent(shipped_model, target, 4, steps=40, generator=torch.Generator().manual_seed(0),
                               record_every=20, **kwargs)
        assert result.record_steps == [0, 20, 40]
        assert float(result.final_loss.mean()) > 1.5 * float(result.clean_losses[0].mean()), kwargs


def test_diversity_penalty_is_mean_similarity_within_group(shipped_model):
    x = torch.randn(4, 1, 28, 28)
    x[1] = x[0]  # members 0 and 1 identical, same group
    penalty = diversity("Conv2D_1", [0, 0, 1, 1])(shipped_model, x)
    assert torch.allclose(penalty[:2], torch.ones(2), atol=1e-5)
    assert float(penalty[2].detach()) < 1.0
