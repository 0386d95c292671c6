"""A tiny wav2vec 2.0 model folder built from a config (no download), for the multimodal
solution's pretrained-audio tests."""

from __future__ import annotations

from pathlib import Path


def tiny_wav2vec(folder: Path, *, normalize: bool = True) -> Path:
    """Write a two-layer-front-end, one-block wav2vec 2.0 and its feature extractor's settings
    (16 kHz, ``do_normalize``) into ``folder``; return it."""
    import transformers

    config = transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=normalize)
    extractor.save_pretrained(folder)
    return folder
