"""recstack.text: item text (`item_texts`) and the text encoder (`TextEncoder` at build,
`OnnxTextEncoder` at serving), with the on-disk embedding cache (`embed_items`).

sentence-transformers and torch are imported only when a model is encoded or exported; serving
needs ONNX Runtime and `tokenizers` only.
"""

from __future__ import annotations

from recstack.text._texts import compose_text, item_texts
from recstack.text.encoder import (
    OnnxTextEncoder,
    TextEncoder,
    TextEncoderConfig,
    default_cache_dir,
    embed_items,
    export_onnx,
    resolve_model,
)

__all__ = [
    "OnnxTextEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "compose_text",
    "default_cache_dir",
    "embed_items",
    "export_onnx",
    "item_texts",
    "resolve_model",
]
