"""DR-Seg assembly: config, presets, model, builder.

"DR-Seg: Decouple and Rectify ..." (2026), section 3 (Fig. 3). The forward pass:

1. CLIP branch (:mod:`drseg.models.clip`): dense features of the 0/90/180/270 rotated inputs,
   rotated back; Eq. 10 correlation with the text embeddings per rotation -> C_ori
   (B, R, K, h, w), R = 4 (or 1 with rotations off).
2. Decouple + rectify (rotation 0 only): SPSD slicing (Eq. 5-6) of the dense map by the
   channel index, PDGR (Eq. 7-9) of F_str with the frozen prior's tokens, recomposition, and
   Eq. 11 -> C_ref (B, K, h, w).
3. Fusion (:mod:`drseg.models.ugaf`): UGAF (Eq. 12-13) or a Table 4 alternative.
4. Aggregator and decoder (:mod:`drseg.models.aggregator`, :mod:`drseg.models.decoder`),
   logits (B, K, 4h, 4w).

Variants: ``drseg`` (above; PDGR off leaves only the CLIP branch), ``catseg`` (no DINO at all)
and ``holistic`` (GSNet / RSKT-Seg style, paper Fig. 1a: a DINO-text correlation -- DINO
tokens projected by a learned 1x1 conv into the text space -- stacked with the CLIP rotation
correlations as one more channel per class, every DINO channel fused uniformly).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from drseg.errors import DrsegInputError
from drseg.models import clip as clip_lib
from drseg.models import spsd
from drseg.models.aggregator import Aggregator
from drseg.models.decoder import Decoder, GuidanceUpsampler, segmentation_loss
from drseg.models.layers import use_patch_gemm
from drseg.models.pdgr import PDGR
from drseg.models.prior import GridAdapter, StructuralPrior
from drseg.models.ugaf import FUSIONS, BranchFusion, per_class

VARIANTS = ("drseg", "catseg", "holistic")


@dataclass
class ModelConfig:
    """Every switch of the model. Defaults = the paper's ViT-B/16 setting (section 4.1)."""

    variant: str = "drseg"  # drseg | catseg (no DINO) | holistic (GSNet/RSKT-style fusion)
    # --- CLIP branch
    clip_model: str = "ViT-B-16-quickgelu"  # open_clip config; OpenAI weights use QuickGELU
    clip_checkpoint: Optional[str] = None  # local OpenAI .pt / open_clip file; None = random
    image_size: int = 384  # model input side; other sizes are resized to it
    templates: tuple = clip_lib.DEFAULT_TEMPLATES  # prompt templates, averaged
    guidance_layers: tuple = (3, 7)  # CLIP blocks for decoder guidance (B: 3, 7; L: 7, 15)
    rotations: bool = True  # 0/90/180/270 multi-rotation branch (RSKT-Seg)
    # --- structural prior (frozen timm ViT)
    prior: str = "vit_large_patch16_dinov3"  # RS-DINOv3 ViT-L/16 (paper default)
    prior_checkpoint: Optional[str] = None  # local file; None = seeded random stand-in
    prior_image_size: Optional[int] = None  # prior input side; None = image_size
    prior_kwargs: dict = field(default_factory=dict)  # extra timm args (tiny stand-in)
    prior_normalize: str = "clip"  # clip (as RSKT-Seg feeds DINO) | imagenet
    # --- SPSD / PDGR (paper: rho 0.5, k 75, sigma_f 2.0, sigma_s 0.05)
    pdgr: bool = True  # Prior-Driven Graph Rectification (off: CLIP branch only)
    spsd: bool = True  # slice by the channel index (off or no index: PDGR on all channels)
    rho: Optional[float] = None  # None = the split stored in the index; else re-split (Eq. 5)
    k: int = 75  # top-k neighbours per node
    sigma_f: float = 2.0  # Eq. 7 feature scale
    sigma_s: float = 0.05  # Eq. 7 spatial decay
    graph_layers: int = 2  # Eq. 9 layers
    edge_hidden: int = 64  # Eq. 8 MLP hidden width
    # --- fusion (Table 4)
    ugaf: bool = True  # uncertainty gate; off with fusion "ugaf" -> "concat" (no gate)
    fusion: str = "ugaf"  # ugaf | mean | concat | separate
    gate_logit_scale: Optional[float] = None  # softmax scale of C_ori in Eq. 12; None = CLIP's
    # --- aggregator / decoder (CAT-Seg constants)
    hidden_dim: int = 128
    appearance_dim: int = 128
    text_guidance_dim: int = 128
    aggregator_layers: int = 2
    swin_window: int = 12  # window 12, shift 6 on the 24x24 grid
    heads: int = 4
    class_pool: int = 2  # class-step pooling in training (1 at evaluation)
    guidance_up_dims: tuple = (256, 128)
    decoder_dims: tuple = (64, 32)
    decoder_guidance_dims: tuple = (32, 16)
    # --- loss
    loss_ignore: str = "mask"  # mask (ignore pixels left out) | zero (reference behaviour)
    ignore_index: int = 255
    seed: int = 0  # initialisation of everything not loaded from a file

    def __post_init__(self) -> None:
        for name in ("templates", "guidance_layers", "guidance_up_dims", "decoder_dims",
                     "decoder_guidance_dims"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.variant not in VARIANTS:
            raise DrsegInputError(f"model.variant: {self.variant!r} not in {VARIANTS}")
        if self.fusion not in FUSIONS:
            raise DrsegInputError(f"model.fusion: {self.fusion!r} not in {FUSIONS}")
        if self.rho is not None and not 0 <= self.rho <= 1:
            raise DrsegInputError(f"model.rho: must be in [0, 1] or null, got {self.rho}")
        if self.loss_ignore not in ("mask", "zero"):
            raise DrsegInputError(f"model.loss_ignore: {self.loss_ignore!r} not mask|zero")
        for name in ("k", "graph_layers", "aggregator_layers", "image_size", "hidden_dim"):
            if getattr(self, name) < 1:
                raise DrsegInputError(f"model.{name}: must be >= 1, got {getattr(self, name)}")

    @property
    def effective_fusion(self) -> str:
        """The fusion actually used: UGAF off turns ``ugaf`` into ``concat``."""
        return "concat" if (self.fusion == "ugaf" and not self.ugaf) else self.fusion

    @property
    def uses_prior(self) -> bool:
        """Whether the model builds the DINO prior."""
        return self.variant == "holistic" or (self.variant == "drseg" and self.pdgr)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (json/yaml friendly: tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Build from a dict; unknown keys raise naming the key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DrsegInputError(f"model: unknown params {unknown}")
        return cls(**dict(d))


_TINY_PRIOR = {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}

#: Named presets: keyword arguments of :class:`ModelConfig`.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU-sized: 64 px input, 8x8 CLIP grid (N = 64 graph nodes; k = 8 keeps the paper's
    # k/N = 75/576 ratio). The CLIP comes from data/clip/drseg-tiny-clip.pt (pretrain stage).
    # The prior is a seeded random-init timm ViT of the DINOv3 family (RoPE, register tokens,
    # LayerScale), shrunk: a structural stand-in, NOT a trained DINO. For a DINOv1-style
    # stand-in set prior: vit_base_patch8_224 (same prior_kwargs).
    "tiny": dict(
        clip_model="drseg-tiny-clip", image_size=64, guidance_layers=(1, 2),
        prior="vit_small_patch16_dinov3", prior_kwargs=dict(_TINY_PRIOR), k=8, edge_hidden=16,
        hidden_dim=32, appearance_dim=16, text_guidance_dim=16, aggregator_layers=1,
        swin_window=4, heads=2, guidance_up_dims=(32, 16), decoder_dims=(16, 8),
        decoder_guidance_dims=(8, 4)),
    # Paper shape, ViT-B/16 CLIP at 384 (24x24 grid), RS-DINOv3 ViT-L/16 at 384.
    "vitb16-384": dict(clip_model="ViT-B-16-quickgelu", image_size=384, guidance_layers=(3, 7)),
    # Paper shape, ViT-L/14 CLIP at 336 (24x24 grid); DINOv3 ViT-L/16 fed 384 px -> 24x24.
    "vitl14-336": dict(clip_model="ViT-L-14-336-quickgelu", image_size=336,
                       guidance_layers=(7, 15), prior_image_size=384),
}


def make_config(preset: str = "tiny", overrides: Optional[Mapping[str, Any]] = None
                ) -> ModelConfig:
    """A preset with overrides (e.g. the ``model:`` block of params.yaml minus ``preset``).

    Args:
        preset: a key of :data:`PRESETS`.
        overrides: :class:`ModelConfig` fields to change (applied as given, ``None``
            included); unknown names raise :class:`DrsegInputError`.

    Returns:
        the config.
    """
    if preset not in PRESETS:
        raise DrsegInputError(f"model.preset: {preset!r} not in {sorted(PRESETS)}")
    merged = dict(PRESETS[preset])
    merged.update(dict(overrides or {}))
    return ModelConfig.from_dict(merged)


class DRSeg(nn.Module):
    """The DR-Seg model (and its ablations / baselines); see the module docstring.

    Build it with :func:`build_model`. ``model(images_0_255, vocab) -> logits``.

    Args:
        cfg: the config.
        clip_model, tokenizer: from :func:`drseg.models.clip.load_open_clip`.
        prior: the frozen prior, or None when ``cfg.uses_prior`` is False.
        channel_index: a validated SPSD record or None.
    """

    def __init__(self, cfg: ModelConfig, clip_model: nn.Module, tokenizer,
                 prior: Optional[StructuralPrior], channel_index: Optional[dict]):
        super().__init__()
        self.cfg = cfg
        self.clip = clip_model
        self.tokenizer = tokenizer
        clip_lib.set_qv_trainable(self.clip)
        use_patch_gemm(self.clip.visual.conv1)  # one GEMM on CUDA (drseg.models.layers)
        visual = self.clip.visual
        # the last vision block runs value-only (dense path): its q projection is unused
        visual.transformer.resblocks[-1].attn.q_proj_weight.requires_grad_(False)
        C, width = visual.output_dim, visual.transformer.width
        patch = visual.patch_size[0]
        if cfg.image_size % patch:
            raise DrsegInputError(f"model.image_size: {cfg.image_size} is not a multiple of the "
                                  f"CLIP patch {patch}")
        self.grid = cfg.image_size // patch
        self.rot = 4 if cfg.rotations else 1
        scale = cfg.gate_logit_scale
        self.gate_scale = float(self.clip.logit_scale.exp()) if scale is None else float(scale)
        self.channel_index = channel_index
        hid = cfg.hidden_dim

        self.prior = prior
        self.adapter = GridAdapter(prior.grid, self.grid, prior.dim) if prior is not None else None
        self.pdgr = self.fusion = self.dino_text = self.proj = None
        if cfg.variant == "drseg" and cfg.pdgr:
            sem = channel_index["semantic"] if channel_index is not None else None
            struct = channel_index["structural"] if channel_index is not None else None
            self.pdgr = PDGR(C, prior.dim, sem, struct, cfg.graph_layers, cfg.k, cfg.sigma_f,
                             cfg.sigma_s, cfg.edge_hidden)
            self.fusion = BranchFusion(self.rot, hid, cfg.effective_fusion, gate=cfg.ugaf)
        else:
            extra = 1 if cfg.variant == "holistic" else 0
            self.proj = nn.Conv2d(self.rot + extra, hid, 7, padding=3)  # cost embedding
            if cfg.variant == "holistic":
                self.dino_text = nn.Conv2d(prior.dim, C, 1)
        self.appearance = nn.Sequential(nn.Conv2d(C, cfg.appearance_dim, 3, padding=1),
                                        nn.ReLU())
        self.text_guidance = nn.Sequential(nn.Linear(C, cfg.text_guidance_dim), nn.ReLU())
        self.aggregator = Aggregator(hid, cfg.appearance_dim, cfg.text_guidance_dim,
                                     cfg.aggregator_layers, cfg.swin_window, cfg.heads,
                                     cfg.class_pool)
        self.guidance_up = GuidanceUpsampler(width, cfg.guidance_up_dims,
                                             cfg.decoder_guidance_dims)
        self.decoder = Decoder(hid, cfg.decoder_dims, cfg.decoder_guidance_dims)
        self._text_cache: dict = {}
        self._token_cache: dict = {}  # tokens do not depend on the weights: never cleared
        # (keyed by vocabulary, device and whether clip.TRUNCATE_TEXT cuts them there)
        self._compiled_dense = None  # see compile_dense

    # ------------------------------------------------------------------ text
    def train(self, mode: bool = True) -> "DRSeg":
        """Switch mode; clears the text cache (weights may have changed)."""
        self._text_cache = {}
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights; clears the text cache."""
        self._text_cache = {}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def text_embeddings(self, vocab: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, C) synonym embeddings and (T,) class index of a vocabulary.

        Recomputed (with gradients) in training from tokens cached per vocabulary (the
        tokenizer runs once, not every step); the embeddings are cached per vocabulary in eval
        mode.
        """
        device = next(self.clip.parameters()).device
        key = (tuple(vocab), str(device))
        if self.training:
            key += (clip_lib.cuts_tokens(device),)  # cut tokens (CUDA) or the full context
            if key not in self._token_cache:
                tokens, group = clip_lib.tokenize_vocab(self.tokenizer, vocab, self.cfg.templates)
                tokens = clip_lib.truncate_tokens(self.clip, tokens, device)  # CUDA: ~10 of 77
                self._token_cache[key] = (tokens.to(device), group.to(device))
            tokens, group = self._token_cache[key]
            return clip_lib.encode_tokens(self.clip, tokens, len(self.cfg.templates)), group
        if key not in self._text_cache:
            with torch.no_grad():
                self._text_cache[key] = clip_lib.encode_vocab(self.clip, self.tokenizer, vocab,
                                                              self.cfg.templates)
        return self._text_cache[key]

    # ------------------------------------------------------------------ forward
    def _clip_branch(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Dense maps of every rotation (rotated back) and rotation-0 guidance features."""
        B = x.shape[0]
        layers = self.cfg.guidance_layers
        if self.rot == 1:
            dense, guide = clip_lib.dense_features_with_guidance(self.clip, x, layers)
            return [dense], guide
        xs = torch.cat([torch.rot90(x, r, dims=(2, 3)) for r in range(4)])  # (4B, 3, H, W)
        dense, guide = clip_lib.dense_features_with_guidance(self.clip, xs, layers)
        maps = [torch.rot90(d, -r, dims=(2, 3)) for r, d in enumerate(dense.split(B))]
        return maps, [g[:B] for g in guide]

    def _decode(self, cost: torch.Tensor, appearance: torch.Tensor, text_g: torch.Tensor,
                guidance: list[torch.Tensor]) -> torch.Tensor:
        agg = self.aggregator(cost, appearance, text_g)  # (B, E, K, h, w)
        return self.decoder(agg, guidance)  # (B, K, 4h, 4w)

    def forward(self, images: torch.Tensor, vocab: Sequence[str]) -> torch.Tensor:
        """Class logits.

        Args:
            images: (B, 3, H, W) float RGB on the 0..255 scale (resized to ``image_size``).
            vocab: K class entries (comma synonyms: the class score is their max).

        Returns:
            (B, K, 4h, 4w) logits, h = image_size / patch (96x96 for ViT-B/16 at 384).
        """
        size = self.cfg.image_size
        if images.dim() != 4 or images.shape[1] != 3:
            raise DrsegInputError(f"images: expected (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            images = images.float()
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear",
                                   align_corners=False)
        x = clip_lib.normalize_images(images)
        text_emb, group = self.text_embeddings(vocab)  # (T, C), (T,)
        return self.dense_forward(x, text_emb, group, len(vocab))

    def dense_forward(self, x: torch.Tensor, text_emb: torch.Tensor, group: torch.Tensor,
                      num_classes: int) -> torch.Tensor:
        """Everything after the text tower: the part :meth:`compile_dense` compiles.

        Args:
            x: (B, 3, S, S) CLIP-normalised images at the model input size.
            text_emb: (T, C) synonym embeddings; group: (T,) their class index (from
                :meth:`text_embeddings`).
            num_classes: K.

        Returns:
            (B, K, 4h, 4w) logits.
        """
        if self._compiled_dense is not None:
            # the vocabulary sizes vary between datasets: compile for any T and K at once
            torch._dynamo.maybe_mark_dynamic(text_emb, 0)
            torch._dynamo.maybe_mark_dynamic(group, 0)
            return self._compiled_dense(x, text_emb, group, num_classes)
        return self._dense_forward(x, text_emb, group, num_classes)

    def compile_dense(self, mode: Optional[str] = None, **compile_kwargs: Any) -> "DRSeg":
        """torch.compile the vision, fusion, aggregation and decoding part only.

        For evaluation and prediction over several vocabularies: compiling the whole model
        specialises the graph on the vocabulary (a Python list of strings) and traces the
        tokenizer, so every dataset recompiles (and after torch's recompile limit runs eager).
        Here the text embeddings stay outside (cached per vocabulary in eval mode); the
        compiled part sees tensors whose class dimension becomes dynamic after the second
        vocabulary size. Training compiles the whole model instead (one vocabulary, and its
        text tower runs inside the graphs).

        Args:
            mode: torch.compile mode (None: default).
            compile_kwargs: more torch.compile arguments (e.g. ``backend``).

        Returns:
            self.
        """
        self._compiled_dense = torch.compile(self._dense_forward, mode=mode, **compile_kwargs)
        return self

    def _dense_forward(self, x: torch.Tensor, text_emb: torch.Tensor, group: torch.Tensor,
                       K: int) -> torch.Tensor:
        maps, guide = self._clip_branch(x)
        c_ori = torch.stack([clip_lib.class_correlation(d, text_emb, group, K) for d in maps],
                            dim=1)  # (B, R, K, h, w), Eq. 10
        dense0 = maps[0]
        B = x.shape[0]
        appearance = self.appearance(dense0)  # (B, G, h, w)
        text_g = self.text_guidance(clip_lib.class_text_embeddings(text_emb, group, K))
        text_g = text_g.unsqueeze(0).expand(B, -1, -1)  # (B, K, G')
        guidance = self.guidance_up(guide)
        c_ori = c_ori.to(dense0.dtype)

        if self.pdgr is None:  # CLIP branch only (catseg / PDGR off) or holistic fusion
            if self.dino_text is not None:
                dino = self.adapter(self.prior(x))  # (B, D, h, w)
                c_dino = clip_lib.class_correlation(self.dino_text(dino), text_emb, group, K)
                c_ori = torch.cat([c_ori, c_dino.unsqueeze(1).to(c_ori.dtype)], dim=1)
            cost = per_class(c_ori, self.proj)  # (B, E, K, h, w)
            return self._decode(cost, appearance, text_g, guidance)

        dino = self.adapter(self.prior(x))  # (B, D, h, w), frozen
        f_ref = self.pdgr(dense0, dino)  # (B, C, h, w): Eq. 6-9 + recomposition
        c_ref = clip_lib.class_correlation(f_ref, text_emb, group, K).to(c_ori.dtype)  # Eq. 11
        gate_scores = self.gate_scale * c_ori.mean(dim=1)  # (B, K, h, w) from C_ori
        if self.fusion.fusion == "separate":
            e_ori, e_ref = self.fusion.embed(c_ori, c_ref, gate_scores)
            return 0.5 * (self._decode(e_ori, appearance, text_g, guidance)
                          + self._decode(e_ref, appearance, text_g, guidance))
        cost = self.fusion(c_ori, c_ref, gate_scores)  # (B, E, K, h, w)
        return self._decode(cost, appearance, text_g, guidance)

    # ------------------------------------------------------------------ training helpers
    def loss(self, logits: torch.Tensor, masks: torch.Tensor, check: bool = True) -> torch.Tensor:
        """Per-class BCE (see :func:`drseg.models.decoder.segmentation_loss`)."""
        return segmentation_loss(logits, masks, self.cfg.ignore_index, self.cfg.loss_ignore,
                                 check)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that train: CLIP q/v projections of both towers and the new modules."""
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, lr: float, clip_lr_mult: float = 0.01) -> list[dict]:
        """Optimizer groups: CLIP q/v at ``lr * clip_lr_mult`` (0.01), the rest at ``lr``."""
        clip_ids = {id(p) for p in self.clip.parameters()}
        clip_p = [p for p in self.clip.parameters() if p.requires_grad]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in clip_ids]
        return [{"name": "clip_qv", "params": clip_p, "lr": lr * clip_lr_mult},
                {"name": "heads", "params": rest, "lr": lr}]

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts (and the prior / CLIP shares)."""
        count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        return {"total": count(self.parameters()),
                "trainable": count(self.trainable_parameters()),
                "clip": count(self.clip.parameters()),
                "clip_trainable": count(p for p in self.clip.parameters() if p.requires_grad),
                "prior": count(self.prior.parameters()) if self.prior is not None else 0}


def resolve_channel_index(index: Union[None, str, Path, Mapping], channels: int,
                          cfg: ModelConfig) -> Optional[dict]:
    """The validated SPSD record the model slices with, or None (PDGR on all channels).

    Args:
        index: path of ``channel_index.json``, an already loaded record, or None.
        channels: the CLIP dense width C.
        cfg: the config (``spsd``, ``pdgr``, ``variant``, ``rho`` are read).
    """
    if index is None or not (cfg.variant == "drseg" and cfg.pdgr and cfg.spsd):
        return None
    if isinstance(index, Mapping):
        return spsd.validate_channel_index(dict(index), channels=channels, rho=cfg.rho,
                                           backbone=cfg.clip_model, source="channel index")
    return spsd.load_channel_index(index, channels=channels, rho=cfg.rho,
                                   backbone=cfg.clip_model)


def build_model(cfg: ModelConfig, channel_index: Union[None, str, Path, Mapping] = None,
                spsd_index: Union[None, str, Path, Mapping] = None) -> DRSeg:
    """Build a model with its weights from the paths in ``cfg``.

    Args:
        cfg: the config.
        channel_index: SPSD channel index (path or record); ignored unless the variant is
            drseg with PDGR and SPSD on. Without one PDGR acts on all channels.
        spsd_index: alias of ``channel_index`` (DESIGN.md's name).

    Returns:
        the model (CPU, fp32, train mode; the prior frozen in eval mode).
    """
    if channel_index is not None and spsd_index is not None:
        raise DrsegInputError("build_model: give channel_index or spsd_index, not both")
    index = channel_index if channel_index is not None else spsd_index
    clip_model, tokenizer = clip_lib.load_open_clip(cfg.clip_model, cfg.clip_checkpoint,
                                                    cfg.image_size, seed=cfg.seed)
    record = resolve_channel_index(index, clip_model.visual.output_dim, cfg)
    prior = None
    if cfg.uses_prior:
        prior = StructuralPrior(cfg.prior, cfg.prior_checkpoint,
                                cfg.prior_image_size or cfg.image_size, cfg.prior_kwargs,
                                cfg.prior_normalize, seed=cfg.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 2)
        model = DRSeg(cfg, clip_model, tokenizer, prior, record)
    return model.train()
