"""Tiny randomly initialised 2D models saved like real checkpoints, for loader tests.

No weights can be downloaded in CI, so each builder writes a `save_pretrained` folder
(config, safetensors, processor and tokenizer files) for a model whose architecture is
the real one with tiny sizes. Tests then load it through the product code path
(`from_pretrained(folder)`), exactly as a user's local or cached checkpoint would be.

Tokenizers are real too: a byte-level CLIP BPE with no merges (every byte is a token)
and a BERT WordPiece vocab laid out so that [CLS]=101, [SEP]=102, "."=1012 and
"?"=1029, the ids Grounding DINO hard-codes as delimiters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

TINY_IMAGE = 32  # processor input size for the OWL / CLIPSeg tiny models


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (the byte-level BPE alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIP BPE tokenizer whose vocab is the 512 single-byte tokens plus 2 specials.

    Specials come last so the legacy "argmax of input_ids is EOS" pooling also holds.
    """
    from transformers import CLIPTokenizer

    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token=pad_token, model_max_length=16)


CLIP_VOCAB = 514
CLIP_BOS, CLIP_EOS = 512, 513


def bert_tokenizer():
    """A BERT WordPiece tokenizer with Grounding DINO's hard-coded special ids."""
    from transformers import BertTokenizer

    tokens = [f"[unused{i}]" for i in range(1030)]
    tokens[0], tokens[100], tokens[101], tokens[102], tokens[103] = (
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    )
    tokens[1012], tokens[1029] = ".", "?"
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens[200:226] = list(letters)
    tokens[300:326] = ["##" + c for c in letters]
    return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)})


def _clip_text_config(**extra) -> dict:
    return dict(vocab_size=CLIP_VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16, bos_token_id=CLIP_BOS,
                eos_token_id=CLIP_EOS, pad_token_id=CLIP_EOS, **extra)


def _vision_config(image_size: int, patch: int, **extra) -> dict:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                image_size=image_size, patch_size=patch, **extra)


def build_owlv2(folder: Path) -> Path:
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
    )

    torch.manual_seed(0)
    config = Owlv2Config(text_config=_clip_text_config(),
                         vision_config=_vision_config(TINY_IMAGE, 8), projection_dim=16)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    image_processor = Owlv2ImageProcessorPil(size={"height": TINY_IMAGE, "width": TINY_IMAGE})
    Owlv2Processor(image_processor, clip_tokenizer(pad_token="!")).save_pretrained(folder)
    return folder


def build_owlvit(folder: Path) -> Path:
    from transformers import (
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessorPil,
        OwlViTProcessor,
    )

    torch.manual_seed(0)
    config = OwlViTConfig(text_config=_clip_text_config(),
                          vision_config=_vision_config(TINY_IMAGE, 8), projection_dim=16)
    OwlViTForObjectDetection(config).save_pretrained(folder)
    size = {"height": TINY_IMAGE, "width": TINY_IMAGE}
    image_processor = OwlViTImageProcessorPil(size=size, crop_size=size)
    OwlViTProcessor(image_processor, clip_tokenizer(pad_token="!")).save_pretrained(folder)
    return folder


def build_clipseg(folder: Path) -> Path:
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        ViTImageProcessorPil,
    )

    torch.manual_seed(0)
    config = CLIPSegConfig(text_config=_clip_text_config(),
                           vision_config=_vision_config(TINY_IMAGE, 8), projection_dim=16,
                           extract_layers=[0, 1], reduce_dim=8, decoder_num_attention_heads=2,
                           decoder_intermediate_size=16)
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    image_processor = ViTImageProcessorPil(size={"height": TINY_IMAGE, "width": TINY_IMAGE},
                                           image_mean=[0.485, 0.456, 0.406],
                                           image_std=[0.229, 0.224, 0.225])
    CLIPSegProcessor(image_processor, clip_tokenizer()).save_pretrained(folder)
    return folder


def build_grounding_dino(folder: Path) -> Path:
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        ResNetConfig,
    )

    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                            layer_type="basic", out_features=["stage1", "stage2"])
    text = BertConfig(vocab_size=1030, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, num_queries=20, encoder_layers=1,
        decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, d_model=32, num_feature_levels=2, encoder_n_points=2,
        decoder_n_points=2, max_text_len=64)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessorPil(
        size={"shortest_edge": 48, "longest_edge": 64})
    GroundingDinoProcessor(image_processor, bert_tokenizer()).save_pretrained(folder)
    return folder


def build_sam(folder: Path) -> Path:
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=8, num_hidden_layers=2,
                           num_attention_heads=2, mlp_dim=32, image_size=64, patch_size=16,
                           window_size=2, global_attn_indexes=[1], num_pos_feats=4),
        prompt_encoder_config=dict(hidden_size=8, image_size=64, patch_size=16,
                                   mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 mlp_dim=16, iou_head_hidden_dim=16),
    )
    SamModel(config).save_pretrained(folder)
    image_processor = SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64,
                                                                                "width": 64},
                                           mask_size={"longest_edge": 16})
    SamProcessor(image_processor).save_pretrained(folder)
    return folder


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "owlv2": build_owlv2,
    "owlvit": build_owlvit,
    "grounding-dino": build_grounding_dino,
    "clipseg": build_clipseg,
    "sam": build_sam,
}


class TinyModels:
    """Builds each tiny model folder on first use under one root (session fixture)."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._built:
            self._built[name] = BUILDERS[name](self.root / name)
        return self._built[name]
