"""Stopped members leave the batch under a stateful optimizer (Adam) too: its state
follows the members that stay, and the numbers are the same as keeping everyone."""

from __future__ import annotations

import pytest
import torch

from convscope.optvis import objectives as obj
from convscope.optvis.callbacks import DeadMembers, RecordEvery
from convscope.optvis.core import TorchOptimizer, optimize
from convscope.optvis.params import FourierImage, PixelImage
from tests.optvis.test_ascent import TinyNet


def _adam_run(freeze: bool, maps: list[int], steps: int = 30, from_start: bool = True, parametrisation=None):
    model = TinyNet().eval()
    objective = obj.channels("Conv2D_1", maps)
    image = parametrisation or FourierImage(len(maps), 5, generator=torch.Generator().manual_seed(3))
    record = RecordEvery(objective, 5)
    return optimize(model, objective, image, steps=steps, step_rule=TorchOptimizer(torch.optim.Adam, lr=0.05),
                    callbacks=[DeadMembers(10, from_start=from_start), record], freeze=freeze)


def test_adam_drops_members_dead_from_the_start_with_the_same_numbers():
    maps = [0, 1, 2, 1, 0]  # map 1 never fires (bias -100): members 1 and 3 are dead from the start
    kept = _adam_run(False, maps)
    dropped = _adam_run(True, maps)
    assert dropped.status[1] == dropped.status[3] == "dead" and int(dropped.dead_step[1]) == 10
    assert kept.status == dropped.status
    assert torch.equal(dropped.images, kept.images)  # the same bits
    assert torch.equal(dropped.losses, kept.losses)
    assert torch.equal(dropped.records["clean"], kept.records["clean"])
    assert kept.member_steps == 5 * 31
    assert dropped.member_steps == 5 * 11 + 3 * 20  # the dead pair left after step 10 (11 evaluations)
    assert not torch.equal(dropped.images[0], FourierImage(5, 5, generator=torch.Generator().manual_seed(3)).images()[0])


def test_restricted_adam_state_steps_the_kept_rows_exactly():
    torch.manual_seed(0)
    whole = torch.nn.Parameter(torch.randn(4, 1, 3, 3))
    rule = TorchOptimizer(torch.optim.Adam, lr=0.1)
    rule.start([whole])
    gradients = [torch.randn(4, 1, 3, 3) for _ in range(3)]
    for g in gradients[:2]:
        rule.propose([whole], [g])
    keep = torch.tensor([0, 2, 3])
    assert rule.can_restrict([whole])
    before = whole.detach().clone()
    twin = TorchOptimizer(torch.optim.Adam, lr=0.1)  # the same history, never restricted
    twin_param = torch.nn.Parameter(before.clone())
    twin.start([twin_param])
    twin.optimizer.state[twin_param] = {k: v.clone() for k, v in rule.optimizer.state[whole].items()}
    part = torch.nn.Parameter(before[keep].clone())
    rule.restrict(keep, [whole], [part])
    state = rule.optimizer.state[part]
    assert torch.equal(state["exp_avg"], twin.optimizer.state[twin_param]["exp_avg"][keep])
    assert torch.equal(state["step"], twin.optimizer.state[twin_param]["step"])
    rule.propose([part], [gradients[2][keep]])
    twin.propose([twin_param], [gradients[2]])
    assert torch.equal(part.detach(), twin_param.detach()[keep])


def _gated(live: torch.Tensor, rows: torch.Tensor) -> obj.Objective:
    """Member ``i`` scores the mean of its image times ``live[rows[i]]`` (0 = quiet)."""
    return obj.Objective(lambda acts, x: x.mean(dim=(1, 2, 3)) * live[rows].to(x), ("Conv2D_1",), "gated",
                         members=lambda index: _gated(live, rows[index]))


def test_a_member_that_had_a_gradient_is_not_dead_for_adam():
    """Zero score and gradient for more than ``patience`` steps after a live start: Adam's
    momentum still moves it, so ``from_start`` keeps it; the plain rule stops it."""

    def run(from_start: bool):
        live = torch.tensor([1.0, 1.0])
        start = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(0))
        start[1] -= start[1].mean()  # member 1's score is 0 exactly while its gate is shut

        class Quiet(DeadMembers):
            def on_step_end(self, run, step):  # member 1's gate shuts after step 2, and stays shut
                if step == 2:
                    live[1] = 0.0

        image = PixelImage(start.clone(), restandardize=False)
        result = optimize(TinyNet().eval(), _gated(live, torch.arange(2)), image, steps=20,
                          step_rule=TorchOptimizer(torch.optim.Adam, lr=0.05), callbacks=[Quiet(3, from_start=from_start)])
        return result, image

    kept, image = run(True)
    assert kept.status == ["max_steps", "max_steps"]
    after_gate = image.current[1].clone()
    plain, plain_image = run(False)
    assert plain.status[1] == "dead"  # the plain rule calls it dead ...
    assert not torch.equal(after_gate, plain_image.current[1])  # ... yet under Adam it kept moving


def test_an_optimizer_whose_state_is_not_per_member_keeps_everyone():
    class Whole(torch.optim.Optimizer):
        """Plain ascent steps plus one state vector of another shape (like LBFGS)."""

        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    self.state[p]["history"] = p.grad.detach().flatten().clone()
                    p.data.add_(p.grad, alpha=-group["lr"])

    maps = [0, 1, 2]
    model = TinyNet().eval()
    rule = TorchOptimizer(Whole, lr=0.05)
    run = optimize(model, obj.channels("Conv2D_1", maps), FourierImage(3, 5, generator=torch.Generator().manual_seed(1)),
                   steps=20, step_rule=rule, callbacks=[DeadMembers(5, from_start=True)], freeze=True)
    assert run.status[1] == "dead"
    assert run.member_steps == 3 * 21  # could not restrict its state: everyone stayed in the batch


@pytest.mark.parametrize("parametrisation", ["fourier", "pixel"])
def test_modern_path_numbers_unchanged_by_dropping_dead_members(shipped_model, parametrisation):
    """The modern path (Adam, no transforms) drops members dead from the start: the
    same images and clean losses as keeping them (``freeze=False`` is the old run)."""
    from convscope.optvis import modern

    maps = list(range(24))
    real_optimize = modern.optimize
    runs = {}

    def spy(*args, **kwargs):
        run = real_optimize(*args, **kwargs)
        runs.setdefault(kwargs["freeze"], run)
        return run

    results = {}
    for freeze in (True, False):
        def forced(*args, _freeze=freeze, **kwargs):
            kwargs["freeze"] = _freeze
            return spy(*args, **kwargs)

        modern.optimize = forced
        try:
            results[freeze] = modern.modern_ascent(shipped_model, obj.channels("Conv2D_3", maps), len(maps), steps=60,
                                                   parametrisation=parametrisation, optimizer="adam",
                                                   generator=torch.Generator().manual_seed(2), record_every=6)
        finally:
            modern.optimize = real_optimize
    assert "dead" in runs[True].status  # some of these maps never fire from a random start
    assert runs[True].member_steps < runs[False].member_steps
    assert torch.equal(results[True].images, results[False].images)
    assert torch.equal(results[True].clean_losses, results[False].clean_losses)
    # without transforms or penalties the records are the run's own scores: the clean objective of the images
    with torch.no_grad():
        clean = obj.channels("Conv2D_3", maps)(shipped_model, results[True].images).double()
    assert torch.allclose(results[True].clean_losses[-1], clean, rtol=1e-5, atol=1e-6)
    assert results[True].record_steps == list(range(0, 61, 6))
