"""Dense open_clip wrapper: the CLIP branch of DR-Seg.

"DR-Seg: Decouple and Rectify ..." (2026), section 3.1 and Eq. 10/11; the dense path follows
the CAT-Seg / RSKT-Seg code that DR-Seg extends (``/work/shared/reference/PROTOCOL.md``
section 3):

* position embeddings interpolated (bicubic) to the input size;
* blocks 0..L-2 run as usual; the last block runs in *value-only* mode: its ``ln_1`` output
  goes through the v projection and ``out_proj`` (no attention mixing), the input token is
  added as residual, then the MLP; then ``ln_post`` and ``proj`` on every token;
* the outputs of chosen intermediate blocks (before ``ln_post``) serve as decoder guidance.

Everything here works on any open_clip ``CLIP`` whose towers use open_clip's default
``ResidualAttentionBlock`` (``nn.MultiheadAttention``): the tiny ``drseg-tiny-clip`` config,
OpenAI ViT-B/16 at 384 and ViT-L/14 at 336.

Public API (used by the PRETRAIN and SPSD stages too):

* :func:`register_configs`, :func:`load_open_clip` -- model + tokenizer from local files;
* :func:`normalize_images` -- 0..255 RGB to CLIP-normalised;
* :func:`dense_features`, :func:`dense_features_with_guidance` -- (B, C, h, w) dense maps;
* :func:`encode_vocab` -- text embeddings of a vocabulary (comma synonyms expanded);
* :func:`correlation` (Eq. 10/11) and :func:`reduce_synonyms` / :func:`class_correlation`.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from drseg.errors import DrsegInputError
from drseg.models.checkpoints import check_state_dict
from drseg.models.layers import attn_projections, device_switch, residual_attention_block

CONFIG_DIR = Path(__file__).parent / "configs"

#: CLIP pixel mean / std on the 0..255 scale (OpenAI CLIP).
CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)

#: The paper's prompt (section 4.1): "A photo of a [CLASS] in the scene".
DEFAULT_TEMPLATES = ("A photo of a {} in the scene",)

ChannelSel = Optional[Union[torch.Tensor, Sequence[int]]]


# --------------------------------------------------------------------------- loading

def register_configs() -> None:
    """Add ``drseg/models/configs/*.json`` to open_clip's model-config registry (idempotent)."""
    names = {p.stem for p in CONFIG_DIR.glob("*.json")}
    if not names.issubset(set(open_clip.list_models())):
        open_clip.add_model_config(CONFIG_DIR)


def read_clip_state_dict(path: Union[str, Path]) -> dict:
    """Read a local CLIP checkpoint into a plain open_clip-keyed state dict.

    Accepts an OpenAI JIT archive (``ViT-B-16.pt``), an OpenAI / open_clip state dict, or an
    open_clip training checkpoint (``{"state_dict": ...}``); a ``module.`` prefix (DDP) is
    stripped.

    Args:
        path: the checkpoint file.

    Returns:
        ``{name: tensor}``.

    Raises:
        DrsegInputError: the file is missing or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DrsegInputError(f"CLIP checkpoint {path}: file not found")
    state = None
    try:  # OpenAI releases are TorchScript archives
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except Exception:  # noqa: BLE001 -- not a JIT archive: try a pickled state dict
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise DrsegInputError(f"CLIP checkpoint {path}: cannot be read ({err})") from err
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise DrsegInputError(f"CLIP checkpoint {path}: holds no tensor state dict")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI JIT extras
        state.pop(key, None)
    return state


def load_open_clip(model_name: str, checkpoint: Optional[Union[str, Path]] = None,
                   image_size: Optional[int] = None, seed: int = 0):
    """Build an open_clip model and tokenizer, with weights from a local file.

    Args:
        model_name: an open_clip config name (``"ViT-B-16-quickgelu"``,
            ``"ViT-L-14-336-quickgelu"``, ``"drseg-tiny-clip"``). OpenAI weights need the
            ``-quickgelu`` configs (OpenAI CLIP uses QuickGELU).
        checkpoint: local OpenAI ``.pt`` (JIT or state dict) or open_clip checkpoint;
            ``None`` = random initialisation (seeded), for tests.
        image_size: input size; the stored position embeddings are resized (bicubic) to its
            grid. ``None`` keeps the config's size.
        seed: seed of the random initialisation.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode, fp32, on the CPU.

    Raises:
        DrsegInputError: unknown config name, missing/unreadable file, or a state dict that
            does not match (the message names the mismatched keys).
    """
    register_configs()
    if model_name not in open_clip.list_models():
        raise DrsegInputError(f"model.clip_model: unknown open_clip config {model_name!r}")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns "no pretrained weights": we load below
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(model_name, pretrained=None,
                                           force_image_size=image_size, device="cpu",
                                           output_dict=False)
    finally:
        logging.disable(previous)
    if checkpoint is not None:
        state = read_clip_state_dict(checkpoint)
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = open_clip.model.convert_to_custom_text_state_dict(state)
        if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
            state["logit_bias"] = torch.zeros_like(model.logit_bias)
        own = model.state_dict()
        for name, _ in model.named_buffers():  # non-persistent buffers a JIT archive keeps
            if name not in own:
                state.pop(name, None)
        open_clip.model.resize_pos_embed(state, model)  # bicubic, to the forced image size
        check_state_dict(model, state, checkpoint, "CLIP checkpoint")
        model.load_state_dict(state, strict=True)
    tokenizer = open_clip.get_tokenizer(model_name)
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- images

def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """CLIP-normalise RGB images given on the 0..255 scale.

    Args:
        images: (B, 3, H, W) float, 0..255.

    Returns:
        (B, 3, H, W) ``(images - mean) / std`` with the CLIP mean/std.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise DrsegInputError(f"images: expected (B, 3, H, W), got {tuple(images.shape)}")
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


# --------------------------------------------------------------------------- dense tower

def _check_vit(visual: nn.Module) -> None:
    if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
        raise DrsegInputError("clip model: dense features need an open_clip VisionTransformer")
    blk = visual.transformer.resblocks[-1]
    if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
        raise DrsegInputError("clip model: dense features need open_clip's default "
                              "ResidualAttentionBlock (nn.MultiheadAttention)")
    if getattr(visual, "attn_pool", None) is not None:
        raise DrsegInputError("clip model: attentional pooling towers are not supported")


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a ViT position embedding (1 class token + square grid) bicubically.

    Args:
        pos_embed: (1 + g*g, D).
        grid: target (h, w).

    Returns:
        (1 + h*w, D).
    """
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    g = int(round(patch_pos.shape[0] ** 0.5))
    if (g, g) == tuple(grid):
        return pos_embed
    patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
    patch_pos = F.interpolate(patch_pos.float(), size=grid, mode="bicubic",
                              align_corners=False).to(pos_embed.dtype)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)  # (h*w, D)
    return torch.cat([cls_pos, patch_pos], dim=0)


def _value_only_block(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run a ResidualAttentionBlock in value-only mode (no attention mixing).

    Args:
        blk: open_clip ``ResidualAttentionBlock``.
        x: (B, L, D) tokens.

    Returns:
        (B, L, D): ``x + ls_1(out_proj(v_proj(ln_1(x))))`` followed by the block's MLP.
    """
    attn = blk.attn
    (_, _, w_v), (_, _, b_v) = attn_projections(attn)
    v = F.linear(blk.ln_1(x), w_v, b_v)  # (B, L, D)
    x = x + blk.ls_1(attn.out_proj(v))
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def dense_features_with_guidance(clip_model: nn.Module, images: torch.Tensor,
                                 guidance_layers: Sequence[int] = ()
                                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Dense CLIP features and intermediate-block features for decoder guidance.

    Args:
        clip_model: open_clip ``CLIP`` (or its ``.visual`` tower).
        images: (B, 3, H, W) CLIP-normalised (see :func:`normalize_images`); H, W multiples of
            the patch size.
        guidance_layers: 0-based indices of blocks whose output tokens (before ``ln_post``) are
            returned, e.g. (3, 7) for ViT-B/16 and (7, 15) for ViT-L/14 as in CAT-Seg.

    Returns:
        ``(dense, guidance)``: dense (B, C, h, w) with C the embedding dim (512 for B/16),
        h = H / patch; guidance a list of (B, width, h, w), one per requested layer.
    """
    visual = getattr(clip_model, "visual", clip_model)
    _check_vit(visual)
    blocks = visual.transformer.resblocks
    n_blocks = len(blocks)
    for i in guidance_layers:
        if not 0 <= i < n_blocks:
            raise DrsegInputError(f"model.guidance_layers: block {i} not in 0..{n_blocks - 1}")
    ph, pw = visual.patch_size
    B, _, H, W = images.shape
    if H % ph or W % pw:
        raise DrsegInputError(f"images: size {H}x{W} is not a multiple of the patch {ph}x{pw}")
    h, w = H // ph, W // pw

    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, D, h, w)
    x = x.flatten(2).transpose(1, 2)  # (B, h*w, D)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(B, -1, -1)
    x = torch.cat([cls, x], dim=1)  # (B, 1 + h*w, D)
    x = x + interpolate_pos_embed(visual.positional_embedding, (h, w)).to(x.dtype)
    x = visual.ln_pre(x)

    guidance = []
    for i, blk in enumerate(blocks):
        if i < n_blocks - 1:
            x = residual_attention_block(blk, x)  # blk(x); packed q|v GEMM on CUDA
        else:
            x = _value_only_block(blk, x)
        if i in guidance_layers:
            g = x[:, 1:].transpose(1, 2).reshape(B, -1, h, w)  # (B, width, h, w)
            guidance.append(g)
    x = visual.ln_post(x[:, 1:])  # (B, h*w, width)
    x = x @ visual.proj  # (B, h*w, C)
    dense = x.transpose(1, 2).reshape(B, -1, h, w)  # (B, C, h, w)
    return dense, guidance


def dense_features(clip_model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Dense CLIP features (the channels SPSD scores and slices).

    Args:
        clip_model: open_clip ``CLIP``.
        images: (B, 3, H, W) CLIP-normalised.

    Returns:
        (B, C, H / patch, W / patch), not L2-normalised.
    """
    return dense_features_with_guidance(clip_model, images, ())[0]


# --------------------------------------------------------------------------- text

def expand_vocab(vocab: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Split comma-separated synonyms.

    Args:
        vocab: one entry per class, synonyms separated by commas (``"facade, wall"``).

    Returns:
        ``(names, group)``: the T synonym names and a (T,) long tensor mapping each to its
        class index 0..K-1.
    """
    names, group = [], []
    for k, entry in enumerate(vocab):
        parts = [p.strip() for p in str(entry).split(",") if p.strip()]
        if not parts:
            raise DrsegInputError(f"vocab: entry {k} ({entry!r}) holds no class name")
        names.extend(parts)
        group.extend([k] * len(parts))
    if not names:
        raise DrsegInputError("vocab: empty class list")
    return names, torch.tensor(group, dtype=torch.long)


def encode_vocab(clip_model: nn.Module, tokenizer, vocab: Sequence[str],
                 templates: Sequence[str] = DEFAULT_TEMPLATES) -> tuple[torch.Tensor, torch.Tensor]:
    """Text embeddings of a vocabulary: one per synonym, templates averaged.

    Each (synonym, template) sentence is encoded and L2-normalised; the template embeddings of
    a synonym are averaged and L2-normalised again (CLIP prompt ensembling). Gradients flow
    (the text tower is fine-tuned); wrap in ``torch.no_grad()`` when not training.

    Args:
        clip_model: open_clip ``CLIP``.
        tokenizer: its tokenizer (from :func:`load_open_clip`).
        vocab: class entries, comma synonyms allowed.
        templates: prompt templates with one ``{}``.

    Returns:
        ``(text_emb, group)``: (T, C) unit-norm embeddings and the (T,) class index of each.
    """
    tokens, group = tokenize_vocab(tokenizer, vocab, templates)
    device = next(clip_model.parameters()).device
    tokens = truncate_tokens(clip_model, tokens, device).to(device)
    return encode_tokens(clip_model, tokens, len(templates)), group.to(device)


def tokenize_vocab(tokenizer, vocab: Sequence[str],
                   templates: Sequence[str] = DEFAULT_TEMPLATES) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of every (synonym, template) sentence, synonym-major, and the class index.

    Args:
        tokenizer: the CLIP tokenizer. vocab: class entries (comma synonyms). templates: prompt
            templates with one ``{}``.

    Returns:
        ``(tokens, group)``: (T * P, context) long tokens on the CPU and the (T,) class index.
    """
    if not templates:
        raise DrsegInputError("model.templates: empty template list")
    names, group = expand_vocab(vocab)
    sentences = [t.format(n) for n in names for t in templates]  # name-major
    return tokenizer(sentences), group


#: where the text tower runs only up to the longest sentence's end (:func:`truncate_tokens`):
#: ``"cuda"`` (default: a CLIP on CUDA), ``"always"`` (tests: on the CPU too), ``"never"``
TRUNCATE_TEXT = "cuda"


def _truncatable(clip_model: nn.Module) -> bool:
    """Whether :func:`encode_text` runs the text tower itself (so that it may cut padding
    columns): open_clip's ``CLIP`` with a causal text tower (open_clip registers ``attn_mask``
    only then), batch-first, pooled at the end token (``argmax`` of the ids; padding is 0, so
    the cut columns never hold the maximum)."""
    return (getattr(clip_model, "attn_mask", None) is not None
            and getattr(clip_model, "text_pool_type", None) == "argmax"
            and getattr(getattr(clip_model, "transformer", None), "batch_first", False)
            and hasattr(clip_model, "token_embedding")
            and hasattr(clip_model, "positional_embedding"))


def truncate_tokens(clip_model: nn.Module, tokens: torch.Tensor,
                    device: Union[str, torch.device]) -> torch.Tensor:
    """Token rows without the columns after the longest sentence's end token, where
    :data:`TRUNCATE_TEXT` says so for ``device`` and the text tower allows it.

    Under the causal mask a token sees only those before it, and the embedding is read at the
    end token, so the padding columns after the last end token change nothing: the text tower
    runs over ~10 of the 77 positions of a CLIP context (:func:`encode_text`).

    Args:
        clip_model: open_clip ``CLIP``. tokens: (N, context) long, padding 0 (CPU, from
            :func:`tokenize_vocab`). device: where the tokens will be encoded.

    Returns:
        (N, L) tokens, L <= context (the input itself when nothing is cut).
    """
    if not (cuts_tokens(torch.device(device)) and _truncatable(clip_model)):
        return tokens
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return tokens[:, :length].contiguous() if length < tokens.shape[1] else tokens


def cuts_tokens(device: torch.device) -> bool:
    """Whether :data:`TRUNCATE_TEXT` cuts the tokens of a text tower on ``device``."""
    return device_switch(TRUNCATE_TEXT, device.type == "cuda")


def encode_text(clip_model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``clip_model.encode_text(tokens)`` for token rows of any length L up to the context
    (:func:`truncate_tokens`): position embeddings cut to L, the blocks through
    :func:`drseg.models.layers.residual_attention_block` with the causal mask (packed attention
    on CUDA), then open_clip's end-token pooling and projection. Text towers that
    :func:`truncate_tokens` leaves alone go to open_clip's ``encode_text``.

    Args:
        clip_model: open_clip ``CLIP``. tokens: (N, L) long.

    Returns:
        (N, C) text embeddings (not normalised).
    """
    if not _truncatable(clip_model):
        return clip_model.encode_text(tokens)
    L = tokens.shape[1]
    cast = clip_model.transformer.get_cast_dtype()
    x = clip_model.token_embedding(tokens).to(cast) + clip_model.positional_embedding[:L].to(cast)
    for blk in clip_model.transformer.resblocks:
        x = residual_attention_block(blk, x, causal=True)
    x = text_global_pool(clip_model.ln_final(x), tokens, "argmax")  # (N, width) at the end token
    proj = clip_model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def encode_tokens(clip_model: nn.Module, tokens: torch.Tensor, templates: int) -> torch.Tensor:
    """(T, C) unit-norm synonym embeddings from :func:`tokenize_vocab` tokens (cut by
    :func:`truncate_tokens` or not), templates averaged (each sentence L2-normalised, the mean
    over templates normalised again)."""
    emb = encode_text(clip_model, tokens)  # (T * P, C)
    emb = F.normalize(emb.float(), dim=-1).view(-1, templates, emb.shape[-1])  # (T, P, C)
    return F.normalize(emb.mean(dim=1), dim=-1)  # (T, C)


def class_text_embeddings(text_emb: torch.Tensor, group: torch.Tensor,
                          num_classes: int) -> torch.Tensor:
    """One embedding per class: the normalised mean of its synonyms (for text guidance).

    Args:
        text_emb: (T, C); group: (T,) class index; num_classes: K.

    Returns:
        (K, C) unit-norm.
    """
    classes = torch.arange(num_classes, device=group.device)
    onehot = (classes.unsqueeze(1) == group.unsqueeze(0)).to(text_emb.dtype)  # (K, T) 0/1
    # (a comparison, not F.one_hot: it stays shape-generic under torch.compile)
    return F.normalize(onehot @ text_emb, dim=-1)  # (K, C)


# --------------------------------------------------------------------------- Eq. 10 / 11

def _select(x: torch.Tensor, channels: ChannelSel, dim: int) -> torch.Tensor:
    if channels is None:
        return x
    idx = torch.as_tensor(channels, device=x.device)
    if idx.dtype == torch.bool:
        if idx.numel() != x.shape[dim]:
            raise DrsegInputError(f"channels: mask of {idx.numel()} for {x.shape[dim]} channels")
        idx = idx.nonzero().flatten()
    if idx.numel() == 0:
        raise DrsegInputError("channels: empty channel subset")
    return x.index_select(dim, idx.long())


def correlation(features: torch.Tensor, text_emb: torch.Tensor,
                channels: ChannelSel = None) -> torch.Tensor:
    """Cosine correlation of dense visual features with text embeddings (Eq. 10 / Eq. 11).

    ``C = F . T / (||F|| ||T||)`` per pixel and text entry. With ``channels`` only those
    channels of both the features and the text embeddings are used (the channel-slice
    experiments of SPSD, paper Fig. 2 / Fig. 6), then normalised.

    Args:
        features: (B, C, h, w) dense features (any scale).
        text_emb: (T, C) or (B, T, C) text embeddings.
        channels: optional channel indices (long, length C') or a (C,) bool mask.

    Returns:
        (B, T, h, w) cosine similarities in [-1, 1].
    """
    feats = F.normalize(_select(features, channels, 1).float(), dim=1)  # (B, C', h, w)
    text = F.normalize(_select(text_emb, channels, -1).float(), dim=-1)  # (T, C') / (B, T, C')
    if text.dim() == 2:
        return torch.einsum("bchw,tc->bthw", feats, text)
    return torch.einsum("bchw,btc->bthw", feats, text)


def reduce_synonyms(corr: torch.Tensor, group: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class scores as the max over each class's synonyms.

    Args:
        corr: (B, T, ...) scores per synonym; group: (T,) class index; num_classes: K.

    Returns:
        (B, K, ...).
    """
    if corr.shape[1] == num_classes:  # one name per class: nothing to reduce
        return corr
    shape = list(corr.shape)
    shape[1] = num_classes
    out = corr.new_full(shape, float("-inf"))
    index = group.view(1, -1, *([1] * (corr.dim() - 2))).expand_as(corr)
    return out.scatter_reduce(1, index, corr, reduce="amax", include_self=True)


def class_correlation(features: torch.Tensor, text_emb: torch.Tensor, group: torch.Tensor,
                      num_classes: int, channels: ChannelSel = None) -> torch.Tensor:
    """Eq. 10/11 per synonym, then the max over synonyms: (B, K, h, w).

    Args:
        features: (B, C, h, w); text_emb: (T, C); group: (T,); num_classes: K;
        channels: optional channel subset (see :func:`correlation`).
    """
    return reduce_synonyms(correlation(features, text_emb, channels), group, num_classes)


# --------------------------------------------------------------------------- fine-tuning

def split_qkv(clip_model: nn.Module) -> int:
    """Split every packed ``in_proj_weight`` of both towers into q/k/v parameters.

    ``nn.MultiheadAttention`` supports separate projection weights natively
    (``_qkv_same_embed_dim = False``: ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``);
    the packed tensor is cut into those three parameters, so that the q and v projections can
    be trained while k stays frozen *without* gradient masks (a masked slice of a packed
    parameter would still move under AdamW weight decay). ``in_proj_bias`` stays packed (all
    biases are frozen). The numerics are unchanged.

    Args:
        clip_model: open_clip ``CLIP``, modified in place.

    Returns:
        the number of attention modules split.
    """
    n = 0
    for mod in clip_model.modules():
        if isinstance(mod, nn.MultiheadAttention) and mod._qkv_same_embed_dim:
            w_q, w_k, w_v = (nn.Parameter(t.detach().clone()) for t in
                             mod.in_proj_weight.chunk(3, dim=0))
            del mod.in_proj_weight
            mod.register_parameter("in_proj_weight", None)
            mod.q_proj_weight, mod.k_proj_weight, mod.v_proj_weight = w_q, w_k, w_v
            mod._qkv_same_embed_dim = False
            n += 1
    return n


def set_qv_trainable(clip_model: nn.Module) -> list[str]:
    """Freeze the CLIP model except the attention q and v projections of both towers.

    Calls :func:`split_qkv` first when needed.

    Args:
        clip_model: open_clip ``CLIP``, modified in place.

    Returns:
        the names of the trainable parameters.
    """
    split_qkv(clip_model)
    names = []
    for name, p in clip_model.named_parameters():
        p.requires_grad_(name.endswith(("attn.q_proj_weight", "attn.v_proj_weight")))
        if p.requires_grad:
            names.append(name)
    return names
