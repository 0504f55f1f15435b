"""Contrastive pretraining of the embedded tiny CLIP, and the evidence that it learned (issue 9).

DR-Seg (and CAT-Seg before it) starts from a CLIP whose channels are already aligned with
language. No CLIP weights can be had on the embedded default, so a tiny open_clip model
(``drseg-tiny-clip``, registered by :mod:`drseg.models.clip`) is pretrained the way CLIP is
(Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
arXiv:2103.00020): a symmetric InfoNCE loss with a learned temperature on captioned images
(:mod:`drseg.data.captions`), no masks. The result is saved as an ordinary open_clip state dict,
which every later stage loads through the same local-checkpoint path the OpenAI weights use.

Evaluation (all with the frozen model):

- retrieval recall@k, image->text and text->image, on held-out captioned images;
- zero-shot presence classification per concept (ROC AUC of the image-prompt cosine);
- synonym structure of the text space (cosine within a concept's names vs across concepts);
- zero-shot dense segmentation: dense features (value-only last block) against the class
  names, argmax per pixel, no segmentation training (the first point of paper Fig. 6).
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn
from tqdm.auto import tqdm

from drseg.atomic import atomic_write_bytes
from drseg.data.captions import CaptionCorpus
from drseg.engine.metrics import confusion_matrix, summarize
from drseg.errors import DrsegInputError
from drseg.models import clip as dclip


# --------------------------------------------------------------------------- loss

def multi_positive_infonce(image_features: torch.Tensor, text_features: torch.Tensor,
                           logit_scale: torch.Tensor, groups: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) with several positives per row.

    ``logits = s * I T^T`` for unit-norm image / text features and learned scale ``s``. CLIP's
    loss is the mean of the cross-entropies of ``logits`` (image->text) and ``logits^T``
    (text->image) against the diagonal. A small captioned corpus holds many samples that say the
    same thing (two crops of water, "water" / "lake"); treating them as negatives of each other
    fights the language. Here the target of row ``i`` is uniform over all ``j`` of the same
    group: ``L = -1/2 [mean_i sum_j q_ij log softmax(logits)_ij + mean_j sum_i q_ji log
    softmax(logits^T)_ji]`` with ``q_ij = [g_i = g_j] / #{k: g_k = g_i}``. With all groups
    distinct it equals open_clip's ``ClipLoss``.

    Args:
        image_features: (B, D) unit-norm.
        text_features: (B, D) unit-norm.
        logit_scale: scalar, already exponentiated (open_clip's ``logit_scale.exp()``).
        groups: (B,) int ids; ``None`` = all distinct (plain CLIP loss).

    Returns:
        scalar loss.
    """
    B = image_features.shape[0]
    if text_features.shape[0] != B:
        raise DrsegInputError(f"multi_positive_infonce: {B} images vs {text_features.shape[0]} texts")
    logits = logit_scale * image_features @ text_features.T  # (B images, B texts)
    if groups is None:
        target = torch.eye(B, dtype=logits.dtype, device=logits.device)
    else:
        target = (groups.view(-1, 1) == groups.view(1, -1)).to(logits.dtype)  # (B, B) symmetric
    target = target / target.sum(dim=1, keepdim=True)
    loss_i2t = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t2i = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


# --------------------------------------------------------------------------- training

def set_determinism(seed: int, threads: int) -> None:
    """Seed torch, fix the thread count and turn on deterministic algorithms.

    Args:
        seed: torch's global seed.
        threads: intra-op threads (results are bit-identical only for the same count).
    """
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's training split: no decay on gains, biases, embeddings-of-one-dim and the scale."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def cosine_lr(step: int, steps: int, warmup: int, lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to ``min_lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rot90 and horizontal flip per image (top-down imagery has no up).

    Args:
        images: (B, 3, H, W) square.
        generator: random source.

    Returns:
        (B, 3, H, W).
    """
    k = torch.randint(0, 4, (images.shape[0],), generator=generator)
    flip = torch.randint(0, 2, (images.shape[0],), generator=generator).bool()
    out = torch.empty_like(images)
    for r in range(4):
        for f in (False, True):
            sel = ((k == r) & (flip == f)).nonzero().flatten()
            if sel.numel():
                x = torch.rot90(images[sel], r, dims=(2, 3))
                out[sel] = torch.flip(x, dims=(3,)) if f else x
    return out


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W), 0..255 (the drseg image convention)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DrsegInputError(f"images: expected (N, H, W, 3), got {images.shape}")
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()  # (N, 3, H, W)


def train_clip(
    corpus: CaptionCorpus,
    model_name: str = "drseg-tiny-clip",
    steps: int = 500,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    warmup: int = 50,
    seed: int = 0,
    threads: int = 2,
    multi_positive: bool = True,
    augment_views: bool = True,
    log_every: int = 25,
    on_log: Callable[[int, dict], None] | None = None,
    progress: bool = True,
    device: str = "cpu",
    pool_type: str | None = None,
) -> tuple[nn.Module, object, list[dict]]:
    """Pretrain an open_clip model contrastively on a caption corpus (CPU, deterministic).

    Args:
        corpus: captioned images.
        model_name: registered open_clip config.
        steps: optimiser steps.
        batch_size: pairs per step (sampled without replacement within an epoch).
        lr: peak AdamW learning rate.
        weight_decay: AdamW decay on weight matrices.
        warmup: linear warm-up steps, then cosine decay.
        seed: seeds initialisation, sampling and augmentation.
        threads: torch threads (fixed, for bit-identical results).
        multi_positive: use :func:`multi_positive_infonce` with caption groups (same named
            concepts = positives); ``False`` = plain CLIP loss.
        augment_views: random rot90 / flip of the images.
        log_every: record loss, scale and lr every this many steps (and at the last).
        on_log: called with ``(step, record)`` at each record (e.g. MLflow logging).
        progress: show a progress bar.
        device: torch device; the default pipeline trains on the CPU (bit-identical reruns
            hold there only).
        pool_type: global image pooling of the vision tower: ``"avg"`` (the image embedding is
            the mean of the projected patch tokens, so every patch token is pulled toward the
            caption: local alignment, measured in issue 9), ``"tok"`` (class token, as OpenAI
            CLIP) or ``None`` (the config's). Dense features do not depend on it.

    Returns:
        ``(model, tokenizer, history)``; the model in eval mode, on ``device``; ``history`` the records
        ``{"step", "loss", "logit_scale", "lr"}``.
    """
    for name, ok in {"steps": steps >= 1, "batch_size": 2 <= batch_size,
                     "lr": lr > 0, "warmup": 0 <= warmup, "threads": threads >= 1}.items():
        if not ok:
            raise DrsegInputError(f"pretrain.{name}: out of range")
    if len(corpus) < batch_size:
        raise DrsegInputError(f"pretrain.batch_size: {batch_size} > corpus size {len(corpus)}")
    set_determinism(seed, threads)
    model, tokenizer = dclip.load_open_clip(model_name, checkpoint=None, seed=seed)
    if pool_type is not None:
        set_pool_type(model, pool_type)
    model.to(device).train()
    tokens = tokenizer(corpus.captions)  # (N, L)
    images = to_tensor_images(corpus.images)  # (N, 3, S, S) 0..255
    groups = torch.from_numpy(corpus.groups())
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(corpus), generator=gen)
    pos = 0
    history: list[dict] = []
    bar = tqdm(range(steps), desc="pretrain", disable=not progress)
    for step in bar:
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(corpus), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x = images[idx]
        if augment_views:
            x = augment(x, gen)
        x, tok, grp = x.to(device), tokens[idx].to(device), groups[idx].to(device)
        cur_lr = cosine_lr(step, steps, warmup, lr)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        img = F.normalize(model.encode_image(dclip.normalize_images(x)), dim=-1)  # (B, D)
        txt = F.normalize(model.encode_text(tok), dim=-1)  # (B, D)
        scale = model.logit_scale.exp()
        loss = multi_positive_infonce(img, txt, scale, grp if multi_positive else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # open_clip's clamp: temperature at least 1/100
            model.logit_scale.clamp_(0, math.log(100))
        if step % log_every == 0 or step == steps - 1:
            rec = {"step": step, "loss": loss.item(), "logit_scale": scale.item(), "lr": cur_lr}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if on_log is not None:
                on_log(step, rec)
    model.eval()
    return model, tokenizer, history


def set_pool_type(model: nn.Module, pool_type: str) -> None:
    """Set the global pooling of an open_clip ViT image tower (``"avg"`` or ``"tok"``)."""
    if pool_type not in ("avg", "tok"):
        raise DrsegInputError(f"pretrain.pool_type: {pool_type!r} is not avg or tok")
    if getattr(model.visual, "attn_pool", None) is not None:
        raise DrsegInputError("pretrain.pool_type: the tower uses attentional pooling")
    model.visual.pool_type = pool_type


# --------------------------------------------------------------------------- checkpoint

def save_clip_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Save an ordinary open_clip state dict (loadable with ``open_clip.create_model(name,
    pretrained=path)`` or :func:`drseg.models.clip.load_open_clip`), atomically.

    Args:
        model: the open_clip model.
        path: destination file; its parent is created.

    Returns:
        the path.
    """
    path = Path(path)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()  # in memory: torch names the archive after the file; "archive" here,
    torch.save(state, buf)  # so the bytes do not depend on the path
    return atomic_write_bytes(path, buf.getvalue())


def load_pretrained(path: str | Path, model_name: str = "drseg-tiny-clip",
                    pool_type: str | None = None) -> tuple[nn.Module, object]:
    """Load a saved checkpoint by path, as the later stages do
    (:func:`drseg.models.clip.load_open_clip`), with the pooling it was trained with.

    Returns:
        ``(model, tokenizer)`` in eval mode on the CPU.
    """
    model, tokenizer = dclip.load_open_clip(model_name, checkpoint=path)
    if pool_type is not None:
        set_pool_type(model, pool_type)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- evaluation

@torch.no_grad()
def encode_images(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Unit-norm global image embeddings of uint8 (N, H, W, 3) images: (N, D)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = to_tensor_images(images[i:i + batch_size]).to(device)
        out.append(F.normalize(model.encode_image(dclip.normalize_images(x)), dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 512
                 ) -> torch.Tensor:
    """Unit-norm text embeddings: (N, D)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        tok = tokenizer(list(texts[i:i + batch_size])).to(device)
        out.append(F.normalize(model.encode_text(tok), dim=-1).cpu())
    return torch.cat(out)


def retrieval_recall(image_emb: torch.Tensor, text_emb: torch.Tensor, groups: torch.Tensor,
                     ks: Sequence[int] = (1, 5)) -> dict:
    """Recall@k of image->text and text->image retrieval among N paired samples.

    Two ways to count a hit, both reported: ``pair`` (the retrieved item is the sample's own
    partner, the usual definition) and ``content`` (the retrieved caption names exactly the
    same concepts as the image's own, i.e. it is an equally correct caption; same group).

    Args:
        image_emb: (N, D) unit-norm; text_emb: (N, D) unit-norm, row i captions image i.
        groups: (N,) content group of each pair.
        ks: the k values.

    Returns:
        ``{"i2t_R@1": .., "t2i_R@1": .., "i2t_content_R@1": .., ...}`` in percent.
    """
    sim = image_emb @ text_emb.T  # (N images, N texts)
    n = sim.shape[0]
    own = torch.arange(n)
    out = {}
    for name, s in (("i2t", sim), ("t2i", sim.T)):
        # rank of own partner: number of items scored strictly higher (ties count in its favour)
        rank = (s > s[own, own].view(-1, 1)).sum(dim=1)
        top = s.topk(max(ks), dim=1).indices  # (N, kmax)
        same = groups[top] == groups.view(-1, 1)  # (N, kmax)
        for k in ks:
            out[f"{name}_R@{k}"] = 100.0 * float((rank < k).float().mean())
            out[f"{name}_content_R@{k}"] = 100.0 * float(same[:, :k].any(dim=1).float().mean())
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties share ranks); NaN without both classes."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def concept_text_embeddings(model: nn.Module, tokenizer, names: Mapping[str, Sequence[str]],
                            templates: Sequence[str] = dclip.DEFAULT_TEMPLATES
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt embeddings of every name of every concept: ``(emb (T, D), concept index (T,))``."""
    vocab = [", ".join(v) for v in names.values()]
    emb, group = dclip.encode_vocab(model, tokenizer, vocab, templates)
    return emb.cpu(), group.cpu()


def presence_auc(image_emb: torch.Tensor, name_emb: torch.Tensor, name_group: torch.Tensor,
                 named: np.ndarray, fractions: np.ndarray, concepts: Sequence[str]) -> dict:
    """Zero-shot presence classification: per concept, the ROC AUC of the image's cosine to the
    concept's prompts (max over its names), positives = the caption names the concept,
    negatives = the concept is absent (0 pixels); images with a trace too small to be named are
    left out for that concept.

    Returns:
        ``{"auc": {concept: percent}, "mean_auc": percent, "positives": {concept: n}}``.
    """
    score = dclip.reduce_synonyms(image_emb @ name_emb.T, name_group, len(concepts))  # (N, C)
    score = score.numpy()
    auc, npos = {}, {}
    for c, name in enumerate(concepts):
        keep = named[:, c] | (fractions[:, c] == 0)
        auc[name] = 100.0 * roc_auc(score[keep, c], named[keep, c])
        npos[name] = int(named[:, c].sum())
    valid = [v for v in auc.values() if not math.isnan(v)]
    return {"auc": auc, "mean_auc": float(np.mean(valid)) if valid else float("nan"),
            "positives": npos}


@torch.no_grad()
def synonym_similarity(model: nn.Module, tokenizer, names: Mapping[str, Sequence[str]],
                       templates: Sequence[str] = dclip.DEFAULT_TEMPLATES) -> dict:
    """Cosine of prompt embeddings within a concept's names against across concepts.

    Returns:
        ``{"within": mean, "across": mean, "per_concept": {c: {"within", "across_max"}},
        "nn_accuracy": percent of names whose nearest other name is a synonym,
        "min_margin": min over concepts of within - max across}``. ``across_max`` is the
        largest mean cosine between this concept's names and another concept's names.
    """
    emb, group = concept_text_embeddings(model, tokenizer, names, templates)
    sim = emb @ emb.T  # (T, T)
    T = sim.shape[0]
    same = group.view(-1, 1) == group.view(1, -1)
    off = ~torch.eye(T, dtype=torch.bool)
    per, margins = {}, []
    concepts = list(names)
    for c, name in enumerate(concepts):
        rows = group == c
        w = sim[rows][:, rows][off[rows][:, rows]]
        across = [float(sim[rows][:, group == d].mean()) for d in range(len(concepts)) if d != c]
        per[name] = {"within": float(w.mean()), "across_max": max(across),
                     "across_mean": float(np.mean(across))}
        margins.append(per[name]["within"] - per[name]["across_max"])
    nn_sim = sim.masked_fill(~off, -2.0)
    nn_idx = nn_sim.argmax(dim=1)
    has_syn = (same & off).any(dim=1)
    nn_acc = float((group[nn_idx] == group)[has_syn].float().mean()) * 100.0
    return {"within": float(sim[same & off].mean()), "across": float(sim[~same].mean()),
            "nn_accuracy": nn_acc, "min_margin": float(min(margins)), "per_concept": per}


@torch.no_grad()
def dense_predict(model: nn.Module, tokenizer, images: torch.Tensor, vocab: Sequence[str],
                  input_size: int | None = None, batch_size: int = 32,
                  templates: Sequence[str] = dclip.DEFAULT_TEMPLATES) -> torch.Tensor:
    """Zero-shot dense prediction with the frozen CLIP (paper Fig. 6, first point).

    Dense features (value-only last block, :func:`drseg.models.clip.dense_features`) against the
    class-name prompts (Eq. 10, max over synonyms), upsampled bilinearly to the image size,
    argmax. No segmentation training.

    Args:
        model: open_clip CLIP.
        tokenizer: its tokenizer.
        images: float (N, 3, H, W) 0..255.
        vocab: class names in mask-id order (comma synonyms allowed).
        input_size: resize images to this square size first (a multiple of the patch);
            ``None`` = as given.
        batch_size: images per forward.
        templates: prompt templates.

    Returns:
        int64 (N, H, W) class ids.
    """
    K = len(vocab)
    device = next(model.parameters()).device
    text, group = dclip.encode_vocab(model, tokenizer, vocab, templates)
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        size = x.shape[-2:]
        if input_size is not None and tuple(size) != (input_size, input_size):
            x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)
        feats = dclip.dense_features(model, dclip.normalize_images(x))  # (B, D, h, w)
        scores = dclip.class_correlation(feats, text, group, K)  # (B, K, h, w)
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)  # (B, K, H, W)
        out.append(scores.argmax(dim=1).cpu())
    return torch.cat(out)


def dense_zero_shot(model: nn.Module, tokenizer, images: torch.Tensor, masks: torch.Tensor,
                    vocab: Sequence[str], input_size: int | None = None, batch_size: int = 32,
                    templates: Sequence[str] = dclip.DEFAULT_TEMPLATES) -> dict:
    """Zero-shot dense segmentation metrics of :func:`dense_predict` against ``masks``.

    Args:
        model, tokenizer, images, vocab, input_size, batch_size, templates: as
            :func:`dense_predict`.
        masks: int64 (N, H, W), 255 = ignore.

    Returns:
        :func:`drseg.engine.metrics.summarize` of the confusion matrix (percent), plus
        ``"constant_mIoU"`` (best mIoU of predicting one class everywhere) and ``"confusion"``.
    """
    K = len(vocab)
    pred = dense_predict(model, tokenizer, images, vocab, input_size, batch_size, templates)
    conf = confusion_matrix(pred, masks.cpu(), K)
    out = summarize(conf)
    out["constant_mIoU"] = constant_miou(conf)
    out["confusion"] = conf.tolist()
    return out


def constant_miou(conf: torch.Tensor) -> float:
    """Best mIoU (percent) of a constant prediction, given the label counts of ``conf``.

    Predicting class c everywhere gives IoU_c = n_c / n and 0 elsewhere, so mIoU =
    max_c n_c / (n * K_valid) with K_valid the classes present in the labels.
    """
    gt = conf.sum(dim=1).double()  # (K,) label pixels per class
    valid = int((gt > 0).sum())
    if valid == 0:
        return float("nan")
    return 100.0 * float(gt.max() / gt.sum()) / valid


# --------------------------------------------------------------------------- configuration

@dataclass
class PretrainConfig:
    """The ``pretrain:`` params block (defaults = the embedded default).

    The architecture is the open_clip config ``model_name`` (``drseg/models/configs/*.json``);
    ``pool_type`` overrides its global image pooling for training (see :func:`train_clip`).
    """

    seed: int = 0                 # init, batch sampling, augmentation
    model_name: str = "drseg-tiny-clip"
    pool_type: str | None = "avg"  # avg: image embedding = mean of the patch tokens; None = config's
    threads: int = 2              # torch threads (bit-identical reruns need the same count)
    # caption corpus (drseg.data.captions.make_corpus)
    corpus_seed: int = 1000       # its own seed, apart from the benchmark's prepare.seed
    corpus_size: int = 8000
    heldout_seed: int = 2000      # held-out captioned images for retrieval / presence
    heldout_size: int = 1000
    scene_size: int = 128
    crop_fraction: float = 0.85
    crop_min: float = 0.2
    crop_max: float = 0.6
    min_fraction_scene: float = 0.01
    min_fraction_crop: float = 0.2
    max_names: int = 5
    views_per_scene: int = 8
    # optimisation (train_clip)
    steps: int = 400
    batch_size: int = 128
    lr: float = 1.0e-3
    weight_decay: float = 0.1
    warmup: int = 40
    multi_positive: bool = True
    augment: bool = True
    log_every: int = 25
    # evidence
    figure_samples: int = 6
    zeroshot: dict = field(default_factory=lambda: {
        "dataset": None, "split": "val", "class_list_variant": "rskt-v1", "input_sizes": [64, 128]})

    @classmethod
    def from_params(cls, block: Mapping[str, Any]) -> "PretrainConfig":
        """Build from the params block; unknown keys or wrong types raise DrsegInputError."""
        known = {f.name: f for f in fields(cls)}
        kw = {}
        defaults = cls()
        for k, v in (block or {}).items():
            if k not in known:
                raise DrsegInputError(f"pretrain.{k}: unknown param (known: {sorted(known)})")
            d = getattr(defaults, k)
            if k == "pool_type":
                if v not in (None, "avg", "tok"):
                    raise DrsegInputError(f"pretrain.pool_type: {v!r} is not avg, tok or null")
            elif k == "zeroshot":
                if not isinstance(v, Mapping):
                    raise DrsegInputError("pretrain.zeroshot: expected a mapping")
                bad = sorted(set(v) - set(d))
                if bad:
                    raise DrsegInputError(f"pretrain.zeroshot: unknown keys {bad} (known: {sorted(d)})")
                v = {**d, **v}
            elif isinstance(d, bool):
                if not isinstance(v, bool):
                    raise DrsegInputError(f"pretrain.{k}: expected true/false, got {v!r}")
            elif isinstance(d, int):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise DrsegInputError(f"pretrain.{k}: expected an integer, got {v!r}")
            elif isinstance(d, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise DrsegInputError(f"pretrain.{k}: expected a number, got {v!r}")
                v = float(v)
            elif isinstance(d, str) and not isinstance(v, str):
                raise DrsegInputError(f"pretrain.{k}: expected a string, got {v!r}")
            kw[k] = v
        return cls(**kw)

    def corpus_kwargs(self) -> dict:
        """Keyword arguments of :func:`drseg.data.captions.make_corpus` (without n / seed)."""
        return dict(scene_size=self.scene_size, crop_fraction=self.crop_fraction,
                    crop_min=self.crop_min, crop_max=self.crop_max,
                    min_fraction_scene=self.min_fraction_scene,
                    min_fraction_crop=self.min_fraction_crop, max_names=self.max_names,
                    views_per_scene=self.views_per_scene)


# --------------------------------------------------------------------------- figure

def top_captions(image_emb: torch.Tensor, text_emb: torch.Tensor, k: int = 3
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (N, k) and cosines (N, k) of the k captions closest to each image."""
    sim = image_emb @ text_emb.T  # (N, M)
    top = sim.topk(k, dim=1)
    return top.indices.numpy(), top.values.numpy()


MATCH_COLORS = {"same": "tab:green", "overlap": "tab:orange", "other": "tab:red"}


def caption_match(named_image: np.ndarray, named_caption: np.ndarray) -> str:
    """How a retrieved caption's concepts relate to the image's own: ``"same"`` set,
    ``"overlap"`` (Jaccard >= 0.5) or ``"other"``. Both args: bool (C,)."""
    if (named_image == named_caption).all():
        return "same"
    inter = (named_image & named_caption).sum()
    union = (named_image | named_caption).sum()
    return "overlap" if union and inter / union >= 0.5 else "other"


def retrieval_figure(images: np.ndarray, true_captions: Sequence[str],
                     retrieved: Sequence[Sequence[tuple[str, float, str]]], path: str | Path) -> list[Path]:
    """A few images with their top retrieved captions, coloured by :func:`caption_match`
    (green = names the same concepts as the image's own caption, orange = at least half of
    them in common, red = less); saved as ``path`` (.png) and the same stem .pdf.

    Args:
        images: uint8 (n, H, W, 3).
        true_captions: the images' own captions.
        retrieved: per image, ``(caption, cosine, match)`` best first, match a key of
            :data:`MATCH_COLORS`.
        path: the .png path.

    Returns:
        the written paths (png, pdf).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(9.5, 1.9 * n), gridspec_kw={"width_ratios": [1, 4]})
    axes = np.atleast_2d(axes)
    for i in range(n):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        axes[i, 0].set_axis_off()
        ax = axes[i, 1]
        ax.set_axis_off()
        ax.text(0.0, 0.92, f"own: {true_captions[i]}", fontsize=8, color="0.25", va="top",
                transform=ax.transAxes)
        for r, (cap, cos, match) in enumerate(retrieved[i]):
            ax.text(0.0, 0.68 - 0.22 * r, f"{r + 1}. {cap}  ({cos:.2f})", fontsize=8.5,
                    color=MATCH_COLORS[match], va="top", transform=ax.transAxes)
    fig.suptitle("Tiny CLIP, held-out synthetic images: top-3 retrieved captions (cosine)\n"
                 "green: same concepts as the image's caption; orange: half or more in common; "
                 "red: fewer", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = path.with_suffix(".pdf")
    fig.savefig(path, dpi=110, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None})
    plt.close(fig)
    return [path, pdf]


def zeroshot_figure(images: np.ndarray, masks: np.ndarray, preds: np.ndarray,
                    classes: Sequence[str], path: str | Path,
                    class_colors: np.ndarray | None = None) -> list[Path]:
    """Images, labels and zero-shot predictions side by side (one row per image), with a
    legend; saved as ``path`` (.png) and the same stem .pdf.

    Args:
        images: uint8 (n, H, W, 3); masks: (n, H, W) ids, 255 = ignore; preds: (n, H, W) ids.
        classes: class names in id order.
        path: the .png path.
        class_colors: (K, 3) uint8 display colours (default: tab20); ignore is black.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    K = len(classes)
    cmap = plt.get_cmap("tab20")
    colors = np.zeros((256, 3), np.uint8)
    if class_colors is None:
        colors[:K] = (np.array([cmap(k % 20)[:3] for k in range(K)]) * 255).astype(np.uint8)
    else:
        colors[:K] = np.asarray(class_colors, np.uint8)[:K]
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n + 0.9))
    axes = np.atleast_2d(axes)
    for i in range(n):
        for j, (im, title) in enumerate(((images[i], "image"), (colors[masks[i]], "label"),
                                         (colors[preds[i]], "zero-shot"))):
            axes[i, j].imshow(im, interpolation="nearest")
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(title, fontsize=9)
    handles = [Patch(color=colors[k] / 255.0, label=c) for k, c in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=min(5, K), fontsize=7, frameon=False)
    fig.suptitle("Tiny CLIP zero-shot dense prediction (no segmentation training)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = path.with_suffix(".pdf")
    fig.savefig(path, dpi=100, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None})
    plt.close(fig)
    return [path, pdf]
