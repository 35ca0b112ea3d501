"""dpaat.gradcam: CAMs against a hand-rolled Grad-CAM (Eq. 19-20), mask scores in closed form, Fig. 4 PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dpaat.gradcam import cam_mask_scores, compute_cams, gradcam_panel, select_correct

S = 16


def _tiny_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),  # target layer: its output is the feature map A of Eq. 19-20
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    )


def _reference_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Eq. 19-20 by hand: α_k = spatial mean of ∂y^c/∂A^k, ReLU(Σ_k α_k A^k), then min-max
    normalised, bilinearly upsampled and min-max normalised again, as pytorch-grad-cam does."""
    model.eval()
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    scores = model(x)
    handle.remove()
    (grads,) = torch.autograd.grad(scores[torch.arange(len(y)), y].sum(), store["A"])
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((alpha * store["A"]).sum(dim=1, keepdim=True))

    def minmax(t: torch.Tensor) -> torch.Tensor:
        t = t - t.amin(dim=(-2, -1), keepdim=True)
        return t / (t.amax(dim=(-2, -1), keepdim=True) + 1e-7)

    cam = F.interpolate(minmax(cam), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return minmax(cam[:, 0]).detach().numpy()


def test_compute_cams_matches_hand_rolled_gradcam() -> None:
    model = _tiny_cnn()
    x = torch.rand(5, 3, S, S, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 1, 0])
    cams = compute_cams(model, model[4], x, y, batch_size=2)
    assert cams.shape == (5, S, S) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1
    np.testing.assert_allclose(cams, _reference_gradcam(model, model[4], x, y), atol=1e-5)


def test_compute_cams_restores_mode_and_leaves_grads() -> None:
    model = _tiny_cnn()
    model.train()
    marker = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, g in zip(model.parameters(), marker):
        p.grad = g
    running_mean = model[1].running_mean.clone()
    compute_cams(model, model[4], torch.rand(2, 3, S, S), [0, 1])
    assert model.training
    assert all(p.grad is g for p, g in zip(model.parameters(), marker))
    assert torch.equal(model[1].running_mean, running_mean)  # eval mode: BatchNorm statistics untouched


def test_compute_cams_bad_input() -> None:
    model = _tiny_cnn()
    with pytest.raises(ValueError, match=r"float in \[0, 1\]"):
        compute_cams(model, model[4], torch.zeros(1, 3, S, S, dtype=torch.uint8), [0])
    with pytest.raises(ValueError, match="exceeds the model's outputs"):
        compute_cams(model, model[4], torch.rand(1, 3, S, S), [5])
    with pytest.raises(ValueError, match="not a submodule"):
        compute_cams(model, _tiny_cnn()[4], torch.rand(1, 3, S, S), [0])
    with pytest.raises(ValueError, match="2 integer class indices"):
        compute_cams(model, model[4], torch.rand(2, 3, S, S), [0])


def test_mask_scores_closed_form() -> None:
    cams = np.zeros((4, 4, 4))
    masks = np.zeros((4, 4, 4), dtype=np.uint8)
    masks[:, :2, :2] = 255  # the lesion: top-left quarter
    cams[0, 0, 0], cams[0, 3, 3] = 3.0, 1.0  # 3 of 4 units inside, maximum inside
    cams[1, 0, 1], cams[1, 2, 2] = 1.0, 3.0  # 1 of 4 inside, maximum outside
    cams[2] = 1.0  # uniform: energy = the mask's area fraction; argmax (first pixel) inside
    scores = cam_mask_scores(cams, masks)
    assert scores["energy_in_mask"].tolist()[:3] == pytest.approx([0.75, 0.25, 0.25])
    assert scores["pointing_hit"].tolist()[:3] == [True, False, True]
    assert scores["mask_fraction"].tolist() == pytest.approx([0.25] * 4)
    # An all-zero CAM has no energy and no maximum.
    assert np.isnan(scores["energy_in_mask"].iloc[3]) and scores["pointing_hit"].isna().iloc[3]


def test_mask_scores_bad_input() -> None:
    with pytest.raises(ValueError, match="same|shape"):
        cam_mask_scores(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        cam_mask_scores(-np.ones((1, 4, 4)), np.ones((1, 4, 4)))


class _Oracle(nn.Module):
    """Predicts the class written in the first pixel of the red channel (0.0, 0.5, 1.0 -> 0, 1, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = torch.round(x[:, 0, 0, 0] * 2).long()
        return F.one_hot(code, 3).float() + 0 * self.unused


def test_select_correct_picks_correct_images_deterministically() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = np.array([0, 0, 0, 2, 1, 2, 2, 0, 2])  # wrong at indices 3 and 7
    x = torch.zeros(9, 3, 4, 4)
    x[:, 0, 0, 0] = torch.tensor(predicted / 2, dtype=torch.float32)
    picks = select_correct(_Oracle(), x, labels, per_class=2, seed=3)
    assert (predicted[picks] == labels[picks]).all()
    assert labels[picks].tolist() == [0, 0, 1, 2, 2]  # class 1 has only one correct image
    assert picks.tolist() == select_correct(_Oracle(), x, labels, per_class=2, seed=3).tolist()
    assert set(select_correct([_Oracle(), _Oracle()], x, labels, per_class=9, seed=0)) == {0, 1, 2, 4, 5, 6, 8}


def test_gradcam_panel_writes_png(tmp_path) -> None:
    model = _tiny_cnn()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = np.array([2, 0, 1, 0])
    masks = np.zeros((4, 32, 32), dtype=np.uint8)
    masks[:, 8:24, 8:24] = 1
    models = {"std": _tiny_cnn(0), "dpaat": _tiny_cnn(1)}
    cams = {m: compute_cams(model, model[4], x, y) for m, model in models.items()}
    path = tmp_path / "gradcam_tiny.png"
    gradcam_panel(x, cams, y, ["mel", "bkl", "nv"], path, masks=masks)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 300
    with pytest.raises(ValueError, match="CAMs of 'std' have shape"):
        gradcam_panel(x, {"std": cams["std"][:2]}, y, ["mel", "bkl", "nv"], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="empty"):
        gradcam_panel(x, {}, y, ["mel", "bkl", "nv"], tmp_path / "bad.png")
