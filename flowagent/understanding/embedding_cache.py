"""Intent example embeddings that survive restarts: one `.npy` vector per example text on disk.

Why: with the offline stack, `flowagent serve` embedded every intent example (the built-in
intents' and each flow's) with MiniLM at every start: 2-3 s on a quiet 2-core machine, 10-22 s
on a loaded one, before calls were accepted. A flow's examples rarely change and the vector of
a text never changes for a given model, so it is computed once and read back (a few ms).

Key: SHA-256 of the cache format version, the model's identity (class, the resolved paths,
sizes and mtimes of its weights and tokenizer files, its truncation length) and the normalised
example text. Value: `<key>.npy`, a float32 vector of the model's width. The directory is
`embeddings/` inside the prompt cache directory (`--prompt-cache`, FLOWAGENT_PROMPT_CACHE_DIR),
so `--prompt-cache off` turns this off too.

Safety as in `runner/prompt_cache.py`: written to a temporary file, fsynced and renamed into
place (a crash or a second process never leaves a truncated entry); an entry that cannot be
read, has the wrong shape or holds non-finite numbers is deleted with a warning and computed
again. A disk that cannot be written is logged once and otherwise ignored. Entries are ~1.7 KB
(a thousand examples is under 2 MB), so there is no size cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from flowagent.fsutil import write_atomically

log = logging.getLogger(__name__)

#: bump when the key recipe, the file format or the embedding computation changes
EMBEDDING_CACHE_VERSION = 2  # 2: the int8 ONNX model
_TMP_PREFIX = ".tmp-"


class CorruptEntry(Exception):
    """A cache file that is not the vector it should be."""


def model_identity(model: Any) -> str | None:
    """Everything about a model that decides a text's vector, or None when it cannot be told
    (then nothing is cached: a wrong vector would silently degrade intent matching)."""
    paths = getattr(model, "files", None)
    if not paths:
        return None
    files: list[Any] = []
    for path in paths:
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            return None
        files.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps(
        [EMBEDDING_CACHE_VERSION, type(model).__name__, getattr(model, "max_tokens", None),
         getattr(model, "hidden", None), files],
        sort_keys=True, default=str,
    )


class EmbeddingDiskCache:
    """One directory of `<key>.npy` vectors. Methods are blocking (file I/O); the scorer calls
    them from the thread that loads flows, never from the event loop."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self._warned_write = False
        self._lock = threading.Lock()
        #: what this cache did since it was made (for logs and tests)
        self.hits = 0
        self.stored = 0
        self.corrupt = 0

    @staticmethod
    def key(identity: str, text: str) -> str:
        h = hashlib.sha256()
        h.update(identity.encode("utf-8"))
        h.update(b"\0")
        h.update(text.encode("utf-8"))
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npy"

    def load(self, key: str, width: int) -> np.ndarray | None:
        """The cached vector, or None (absent, or unreadable: then deleted with a warning)."""
        path = self.path(key)
        try:
            vec = np.load(path, allow_pickle=False)
            if not isinstance(vec, np.ndarray) or vec.shape != (width,) \
                    or vec.dtype != np.float32:
                raise CorruptEntry(f"unexpected array {getattr(vec, 'shape', '?')}"
                                   f" {getattr(vec, 'dtype', '?')}")
            if not np.all(np.isfinite(vec)):
                raise CorruptEntry("non-finite values")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError, CorruptEntry) as exc:
            log.warning("embedding cache entry %s is unreadable (%s); computing it again",
                        path, exc)
            with self._lock:
                self.corrupt += 1
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with self._lock:
            self.hits += 1
        return vec

    def store(self, key: str, vec: np.ndarray) -> bool:
        """Write atomically (temp file, fsync, rename); failures are logged once and ignored."""
        arr = np.ascontiguousarray(vec, dtype=np.float32)
        try:
            write_atomically(self.path(key), lambda f: np.save(f, arr, allow_pickle=False),
                             tmp_prefix=_TMP_PREFIX)
        except OSError as exc:
            if not self._warned_write:
                self._warned_write = True
                log.warning("cannot write the embedding cache in %s (%s); intent examples will"
                            " be embedded again at the next start", self.dir, exc)
            return False
        with self._lock:
            self.stored += 1
        return True


def cache_beside_prompts(prompt_disk: Any) -> EmbeddingDiskCache | None:
    """The embedding cache serve uses: `embeddings/` inside the prompt cache directory, or None
    when the prompt cache is off."""
    folder = getattr(prompt_disk, "dir", None)
    if folder is None:
        return None
    return EmbeddingDiskCache(Path(folder) / "embeddings")
