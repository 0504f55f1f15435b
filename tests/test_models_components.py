"""Equation-level tests of PDGR (Eq. 7-9), UGAF (Eq. 12-13), the loss and the prior loaders."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from drseg.errors import DrsegInputError
from drseg.models import pdgr, ugaf
from drseg.models.checkpoints import read_prior_state_dict
from drseg.models.decoder import segmentation_loss
from drseg.models.prior import GridAdapter, StructuralPrior


def test_affinity_eq7_against_direct_loop():
    g = torch.Generator().manual_seed(0)
    dino = torch.randn(2, 6, 5, generator=g)
    coords = pdgr.grid_coords(2, 3)
    sigma_f, sigma_s, eps = 2.0, 0.7, 1e-6
    a = pdgr.affinity(dino, coords, sigma_f, sigma_s, eps)
    d_max = math.sqrt(1 ** 2 + 2 ** 2)  # corners (0, 0) and (1, 2)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                fi, fj = dino[b, i], dino[b, j]
                cos = float(fi @ fj) / (float(fi.norm()) * float(fj.norm()))
                dist = math.dist(coords[i].tolist(), coords[j].tolist())
                ref = sigma_f * cos ** 2 * math.exp(-sigma_s * dist / (d_max + eps))
                assert a[b, i, j].item() == pytest.approx(ref, rel=1e-5, abs=1e-7)
    with pytest.raises(DrsegInputError):
        pdgr.affinity(dino, coords[:5], 1.0, 1.0)


def test_topk_keeps_exactly_k_largest_and_excludes_self():
    g = torch.Generator().manual_seed(1)
    aff = torch.rand(2, 10, 10, generator=g)
    aff = aff + 10 * torch.eye(10)  # self would win if not excluded
    nb = pdgr.topk_neighbors(aff, 4)
    assert nb.shape == (2, 10, 4)
    for b in range(2):
        for i in range(10):
            chosen = set(nb[b, i].tolist())
            assert len(chosen) == 4 and i not in chosen
            others = [j for j in range(10) if j != i]
            best = sorted(others, key=lambda j: -aff[b, i, j].item())[:4]
            assert chosen == set(best)
    assert pdgr.topk_neighbors(aff, 50).shape == (2, 10, 9)  # capped at N - 1
    with pytest.raises(DrsegInputError):
        pdgr.topk_neighbors(aff, 0)


def test_edge_mlp_eq8_matches_concatenation():
    torch.manual_seed(0)
    mlp = pdgr.EdgeMLP(5, 7)
    dino = torch.randn(1, 4, 5)
    nb = torch.tensor([[[0, 2], [1, 3], [2, 0], [3, 1]]])
    w = mlp(dino, nb)
    for i in range(4):
        for m, j in enumerate(nb[0, i].tolist()):
            cat = torch.cat([dino[0, i], dino[0, j]])
            ref = F.softplus(mlp.fc2(F.relu(mlp.fc1(cat))))
            torch.testing.assert_close(w[0, i, m], ref[0])
    assert (w > 0).all()


def test_normalized_adjacency_eq9_weights_and_degrees():
    nb = torch.tensor([[[0, 1], [1, 2], [2, 0]]])  # self loop first, one neighbour each
    w = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    adj = pdgr.normalized_adjacency(nb, w, eps=0.0)
    d = [3.0, 7.0, 11.0]  # row sums over N(i) u {i}
    ref = torch.zeros(3, 3)
    for i in range(3):
        for m, j in enumerate(nb[0, i].tolist()):
            ref[i, j] = w[0, i, m] / math.sqrt(d[i] * d[j])
    torch.testing.assert_close(adj[0], ref)
    assert adj[0, 0, 2] == 0 and adj[0, 2, 0] != 0  # not symmetrised


def test_graph_rectifier_layers_relu_then_layernorm():
    torch.manual_seed(0)
    gr = pdgr.GraphRectifier(channels=3, dino_dim=4, layers=2, k=2, sigma_f=2.0, sigma_s=0.05)
    h = torch.randn(1, 6, 3)
    dino = torch.randn(1, 6, 4)
    coords = pdgr.grid_coords(2, 3)
    adj = gr.graph(dino, coords)
    assert ((adj[0] != 0).sum(-1) == 3).all()  # k = 2 neighbours + self loop per node
    ref = F.relu(adj @ gr.weights[0](h))
    ref = gr.out_norm(adj @ gr.weights[1](ref))
    torch.testing.assert_close(gr(h, dino, coords), ref)


def test_pdgr_keeps_semantic_channels_and_recomposes():
    torch.manual_seed(0)
    sem, struct = [4, 0, 2], [1, 5, 3]
    mod = pdgr.PDGR(6, 8, sem, struct, layers=1, k=3)
    f = torch.randn(2, 6, 3, 3)
    out = mod(f, torch.randn(2, 8, 3, 3))
    assert out.shape == f.shape
    torch.testing.assert_close(out[:, sem], f[:, sem])
    assert not torch.allclose(out[:, struct], f[:, struct])
    with pytest.raises(DrsegInputError, match="partition"):
        pdgr.PDGR(6, 8, [0, 1], [2, 3], layers=1)
    full = pdgr.PDGR(6, 8, layers=1, k=3)  # no index: every channel rectified
    assert full.rectifier.weights[0].in_features == 6


def test_uncertainty_gate_eq12_by_hand():
    corr = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 2)
    gate = ugaf.uncertainty_gate(corr)
    assert gate.shape == (1, 1, 1, 2)
    p = [math.exp(v) for v in (1.0, 2.0, 0.5)]
    p = [v / sum(p) for v in p]
    u = -sum(v * math.log(v + 1e-8) for v in p)
    assert gate[0, 0, 0, 0].item() == pytest.approx((u / math.log(3)) ** 2, rel=1e-5)
    assert gate[0, 0, 0, 1].item() == pytest.approx(1.0, abs=1e-6)  # uniform = maximal
    with pytest.raises(DrsegInputError):
        ugaf.uncertainty_gate(torch.zeros(1, 1, 2, 2))


def test_ugaf_eq13_modulates_refined_branch():
    torch.manual_seed(0)
    fuse = ugaf.BranchFusion(rotations=4, dim=8, fusion="ugaf")
    c_ori, c_ref = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 3, 5, 5)
    scores = torch.randn(2, 3, 5, 5)
    e_ori, e_ref = fuse.embed(c_ori, c_ref, scores)
    gated = torch.sigmoid(fuse.psi(ugaf.uncertainty_gate(scores))) * c_ref
    ref = ugaf.per_class(ugaf.per_class(gated.unsqueeze(1), fuse.proj_ref), fuse.multiscale)
    torch.testing.assert_close(e_ref, ref)
    assert fuse(c_ori, c_ref, scores).shape == (2, 8, 3, 5, 5)
    assert ugaf.BranchFusion(4, 8, "ugaf", gate=False).psi is None
    with pytest.raises(DrsegInputError):
        ugaf.BranchFusion(4, 8, "max")


def test_loss_masks_ignore_or_uses_zero_targets():
    logits = torch.tensor([[[[2.0]], [[-1.0]]]])  # (1, 2, 1, 1), upsampled to the mask
    masks = torch.tensor([[[0, 255]]])  # (1, 1, 2)
    bce = F.binary_cross_entropy_with_logits
    valid = (bce(torch.tensor(2.0), torch.tensor(1.0)) + bce(torch.tensor(-1.0), torch.tensor(0.0))) / 2
    ignore = (bce(torch.tensor(2.0), torch.tensor(0.0)) + bce(torch.tensor(-1.0), torch.tensor(0.0))) / 2
    torch.testing.assert_close(segmentation_loss(logits, masks), valid)
    torch.testing.assert_close(segmentation_loss(logits, masks, ignore_mode="zero"),
                               (valid + ignore) / 2)
    with pytest.raises(DrsegInputError, match="class id"):
        segmentation_loss(logits, torch.tensor([[[3, 0]]]))


TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
TINY_DINOV3 = {"embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.mark.parametrize("backbone,kwargs,wrap", [
    ("vit_base_patch8_224", TINY_VIT, "dino_v1"),  # RS-DINOv1 (RSIB) layout
    ("vit_small_patch16_dinov3", TINY_DINOV3, "plain"),  # DINOv3 family (Eva in timm)
])
def test_prior_checkpoint_roundtrip(tmp_path, backbone, kwargs, wrap):
    src = StructuralPrior(backbone, None, 32, kwargs, seed=0)
    state = src.model.state_dict()
    if wrap == "dino_v1":  # DINO v1 training checkpoint: teacher, module.backbone., DINOHead
        state = {"module.backbone." + k: v for k, v in state.items()}
        state["module.head.last_layer.weight_g"] = torch.ones(1, 1)
        state = {"teacher": state, "student": {}, "epoch": 100}
    torch.save(state, tmp_path / "prior.pth")
    dst = StructuralPrior(backbone, tmp_path / "prior.pth", 32, kwargs, seed=5)
    x = torch.randn(2, 3, 32, 32)
    out = dst(x)
    torch.testing.assert_close(out, src(x), rtol=0, atol=0)
    assert out.shape == (2, 32, 32 // dst.patch, 32 // dst.patch)
    assert not any(p.requires_grad for p in dst.parameters())
    dst.train()
    assert not dst.model.training


def test_prior_fixed_grid_rope_matches_per_forward_rope():
    """The prior is built with a fixed token grid (``dynamic_img_size=False``), so timm's DINOv3
    RoPE table is computed once and read back; on the CPU that gives bitwise the output of the
    per-forward table (timm's default for DINOv3), for inputs of any size (resized first)."""
    fixed = StructuralPrior("vit_small_patch16_dinov3", None, 64, TINY_DINOV3, seed=3)
    dynamic = StructuralPrior("vit_small_patch16_dinov3", None, 64,
                              {**TINY_DINOV3, "dynamic_img_size": True}, seed=3)
    assert not fixed.model.dynamic_img_size and dynamic.model.dynamic_img_size
    rope = fixed.model.rope
    assert rope.get_embed() is rope.pos_embed_cached  # read, not rebuilt
    assert dynamic.model.rope.pos_embed_cached is None
    assert set(fixed.state_dict()) == set(dynamic.state_dict())  # checkpoints unchanged
    for size in (64, 48):
        x = torch.randn(2, 3, size, size)
        torch.testing.assert_close(fixed(x), dynamic(x), rtol=0, atol=0)
    # a timm ViT without the option (BEiT) is built without it, seeded as any other
    beit = [StructuralPrior("beit_base_patch16_224", None, 32, TINY_DINOV3, seed=4) for _ in range(2)]
    assert not hasattr(beit[0].model, "dynamic_img_size")
    x = torch.randn(1, 3, 32, 32)
    out = beit[0](x)
    assert out.shape == (1, 32, 2, 2) and torch.equal(out, beit[1](x))
    with pytest.raises(DrsegInputError, match="no_such_arg"):
        StructuralPrior("beit_base_patch16_224", None, 32, {**TINY_DINOV3, "no_such_arg": 1})


def test_prior_checkpoint_errors(tmp_path):
    with pytest.raises(DrsegInputError, match="not found"):
        StructuralPrior("vit_base_patch8_224", tmp_path / "none.pth", 32, TINY_VIT)
    other = timm.create_model("vit_base_patch8_224", pretrained=False, num_classes=0,
                              img_size=32, **{**TINY_VIT, "depth": 1})
    torch.save(other.state_dict(), tmp_path / "short.pth")
    with pytest.raises(DrsegInputError) as err:
        StructuralPrior("vit_base_patch8_224", tmp_path / "short.pth", 32, TINY_VIT)
    assert "short.pth" in str(err.value) and "blocks.1." in str(err.value)
    with pytest.raises(DrsegInputError, match="unknown timm model"):
        StructuralPrior("no_such_vit", None, 32)
    torch.save({"teacher": {"module.backbone.x": torch.zeros(1)}}, tmp_path / "t.pth")
    assert list(read_prior_state_dict(tmp_path / "t.pth")) == ["x"]


def test_grid_adapter():
    x = torch.randn(1, 4, 16, 16)
    learned = GridAdapter(16, 8, 4)
    assert isinstance(learned.conv, torch.nn.Conv2d) and learned.conv.stride == (2, 2)
    assert learned(x).shape == (1, 4, 8, 8)
    assert GridAdapter(8, 8, 4)(x[..., :8, :8]).equal(x[..., :8, :8])
    assert GridAdapter(7, 8, 4)(torch.randn(1, 4, 7, 7)).shape == (1, 4, 8, 8)
