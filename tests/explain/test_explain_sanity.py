"""The model-parameter randomisation test and its similarity measures."""

from __future__ import annotations

import copy

import pytest
import torch

from convscope.explain.sanity import average_ranks, randomisable_layers, sanity_check, spearman, ssim


def test_average_ranks_share_ties():
    assert average_ranks(torch.tensor([10.0, 0.0, 0.0, 5.0, 0.0])).tolist() == [5.0, 2.0, 2.0, 4.0, 2.0]


def test_spearman_matches_scipy_with_ties():
    from scipy import stats  # a test dependency (pyproject [test]): never skipped
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4, 60, generator=generator)
    b = a + torch.randn(4, 60, generator=generator)
    a[:, :20] = 0  # many ties, as in rectified attribution maps
    ours = spearman(a, b)
    theirs = [stats.spearmanr(a[i], b[i]).statistic for i in range(4)]
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float32), atol=1e-6)
    assert torch.allclose(spearman(a, 3 * a + 1), torch.ones(4))
    assert torch.allclose(spearman(a, -a), -torch.ones(4))
    assert spearman(torch.ones(1, 5), torch.arange(5.0)[None]).item() == 0.0  # constant map: no correlation


def test_ssim_properties():
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(3, 1, 28, 28, generator=generator)
    assert torch.allclose(ssim(a, a), torch.ones(3))
    noisy = (a + 0.3 * torch.randn(a.shape, generator=generator)).clamp(0, 1)
    far = torch.rand(3, 1, 28, 28, generator=generator)
    assert (ssim(a, noisy) < 0.95).all() and (ssim(a, far) < ssim(a, noisy)).all()
    assert torch.allclose(ssim(a, noisy), ssim(noisy, a), atol=1e-6)
    # constant images: SSIM reduces to the luminance term (2*mu_a*mu_b + c1) / (mu_a^2 + mu_b^2 + c1)
    c1 = 0.01**2
    value = ssim(torch.full((1, 1, 9, 9), 0.2), torch.full((1, 1, 9, 9), 0.6))
    assert value.item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1), rel=1e-6)


def test_sanity_check_on_model_a(shipped_model, batch):
    x, _ = batch
    before = copy.deepcopy(shipped_model.state_dict())
    stages_done = []
    result = sanity_check(
        shipped_model, x[:4], ("saliency", "gbp", "gradcam"), seed=0,
        progress=lambda done, total: stages_done.append((done, total)),
    )
    # the trained model is not touched (a copy is randomised)
    assert all(torch.equal(before[k], v) for k, v in shipped_model.state_dict().items())
    assert randomisable_layers(shipped_model) == ["Dense_2", "Dense_1", "Conv2D_3", "Conv2D_2", "Conv2D_1"]
    assert result.stages == ["original", "Dense_2", "Dense_1", "Conv2D_3", "Conv2D_2", "Conv2D_1"]
    assert stages_done[-1] == (6, 6)
    for method in result.methods:
        assert result.spearman[method][0] == pytest.approx(1.0)
        assert result.ssim[method][0] == pytest.approx(1.0)
        assert result.maps[method].shape == (6, 4, 1, 28, 28)
        assert all(-1 <= v <= 1 for v in result.spearman[method] + result.ssim[method])
    # Adebayo et al.: Grad-CAM depends on the top layers (collapses at once) while guided
    # backprop barely notices the randomised classifier (it stays closer than the gradient)
    assert result.spearman["gradcam"][1] < 0.5
    assert result.spearman["gbp"][1] > result.spearman["saliency"][1]
    assert result.spearman["gbp"][1] > 0.8
    # every method's map changes once all layers are random
    assert all(result.ssim[m][-1] < 0.9 for m in result.methods)
    data = result.to_dict()
    assert data["stages"] == result.stages and set(data["spearman_abs"]) == {"saliency", "gbp", "gradcam"}
    assert data["targets"] == shipped_model(x[:4]).argmax(1).tolist()


def test_sanity_check_is_repeatable(shipped_model, batch):
    x, _ = batch
    one = sanity_check(shipped_model, x[:2], ("saliency",), layers=["Dense_2"], seed=5)
    two = sanity_check(shipped_model, x[:2], ("saliency",), layers=["Dense_2"], seed=5)
    other = sanity_check(shipped_model, x[:2], ("saliency",), layers=["Dense_2"], seed=6)
    assert one.spearman == two.spearman and one.spearman != other.spearman


class _Registered(torch.nn.Module):
    """Layers registered in another order than the forward pass calls them; a
    ModuleList of convs, a BatchNorm (scales only: not re-drawn) and a parameter-free ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(4 * 4 * 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)])
        self.act = torch.nn.ReLU()

    def forward(self, x):
        x = self.act(self.norm(self.convs[0](x)))
        x = self.act(self.convs[1](x))
        return self.head(x.flatten(1))


def test_randomised_layers_follow_the_forward_pass():
    import convscope

    model = convscope.wrap(_Registered().eval(), input_shape=(1, 4, 4), class_names=["a", "b", "c"], preprocessing="unit")
    assert randomisable_layers(model) == ["head", "convs.1", "convs.0"]
    result = sanity_check(model, torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)), ("saliency",))
    assert result.stages == ["original", "head", "convs.1", "convs.0"]
    with pytest.raises(ValueError, match="cannot randomise \\['nope'\\]"):
        sanity_check(model, torch.rand(1, 1, 4, 4), ("saliency",), layers=["nope"])
