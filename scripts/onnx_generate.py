"""Text from an ``rnnlab-export format=onnx`` directory, with numpy and onnxruntime alone.

    python scripts/onnx_generate.py logs/export/runs/<stamp> --prompt "ROMEO:"
    python scripts/onnx_generate.py DIR --prompt "ROMEO:" --greedy   # = rnnlab-sample greedy=true

No torch and no rnnlab: copy this file beside the three exported files (model.onnx,
vocab.json, manifest.json) and run it wherever onnxruntime runs. It checks both files
against the SHA-256 in the manifest, runs the prompt through the model in one call, then
one token per call, feeding each call's state (``h``, ``c`` for an LSTM, ``m`` for blocks
with a convolution: the manifest's ``state_shapes``) to the next.

The tokenization is rnnlab's (``rnnlab.data.vocab``), written out again because this file
may not import it; a test holds the two to the same text. Sampling draws from numpy's
generator: a seed gives the same text on every run, though not rnnlab-sample's text for
that seed. Greedy decoding needs no generator and prints exactly what rnnlab-sample prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

MANIFEST_FILE, MANIFEST_KIND, MANIFEST_VERSION = "manifest.json", "rnnlab-export", 2

try:
    import numpy as np
    import onnxruntime
except ImportError as exc:
    sys.exit(
        f"error: onnx_generate.py needs numpy and onnxruntime ({exc.name} is missing): "
        "pip install numpy onnxruntime."
    )


class Refused(Exception):
    """A mistake in the files or the options, said in one sentence."""


@dataclasses.dataclass
class Exported:
    """An export read back: its onnxruntime session, manifest and vocabulary."""

    session: onnxruntime.InferenceSession
    manifest: dict[str, Any]
    itos: list[str]

    def __post_init__(self) -> None:
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        self.level = self.manifest["level"]
        self.special = self.manifest["special_tokens"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, refused unless rnnlab-export wrote it in the layout read here."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise Refused(
            f"{directory} holds no {MANIFEST_FILE}; give the directory rnnlab-export wrote."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        raise Refused(
            f"{path} is not an rnnlab-export manifest; export the model with rnnlab-export."
        )
    if manifest.get("version") != MANIFEST_VERSION or manifest.get("format") != "onnx":
        raise Refused(
            f"{path} describes a {manifest.get('format')} export of layout "
            f"{manifest.get('version')}; this script reads ONNX exports of layout "
            f"{MANIFEST_VERSION}: export again with rnnlab-export format=onnx."
        )
    return manifest


def checked_file(directory: Path, manifest: dict[str, Any], what: str) -> Path:
    """``model`` or ``vocab``'s file, refused unless it hashes to what the manifest says."""
    path = directory / manifest[f"{what}_file"]
    if not path.is_file():
        raise Refused(f"{path} is missing; export the model again with rnnlab-export.")
    if sha256(path) != manifest[f"{what}_sha256"]:
        raise Refused(
            f"{path} does not match the SHA-256 in {MANIFEST_FILE}: it is corrupt or "
            "comes from another export; export the model again with rnnlab-export."
        )
    return path


def load(directory: str | Path) -> Exported:
    """The export in ``directory``, every file checked against the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    model_path = checked_file(directory, manifest, "model")
    vocab_path = checked_file(directory, manifest, "vocab")
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    itos = vocab.get("itos") if isinstance(vocab, dict) else None
    if not isinstance(itos, list) or len(itos) != manifest["vocab_size"]:
        size = len(itos) if isinstance(itos, list) else "no"
        raise Refused(
            f"{vocab_path} holds {size} tokens where {MANIFEST_FILE} says "
            f"{manifest['vocab_size']}; export the model again with rnnlab-export."
        )
    if vocab.get("level") != manifest["level"]:
        raise Refused(
            f"{vocab_path} is {vocab.get('level')}-level where {MANIFEST_FILE} says "
            f"{manifest['level']}; export the model again with rnnlab-export."
        )
    try:
        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime says why in its first line
        raise Refused(
            f"onnxruntime cannot load {model_path} ({str(exc).splitlines()[0]})."
        ) from None
    names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if names != (manifest["inputs"], manifest["outputs"]):
        raise Refused(
            f"{model_path} takes {names[0]} and gives {names[1]}, not the manifest's "
            f"{manifest['inputs']} and {manifest['outputs']}: it was not written by rnnlab-export."
        )
    return Exported(session, manifest, itos)


def tokenize(exported: Exported, text: str) -> list[str]:
    """Characters, or words with ``<eos>`` ending every line (a last line without ``\\n`` too)."""
    if exported.level == "char":
        return list(text)
    if text and not text.endswith("\n"):
        text += "\n"
    return text.replace("\n", f" {exported.special['eos']} ").split()


def prompt_ids(exported: Exported, prompt: str, allow_unknown: bool) -> list[int]:
    """Ids to start from; an empty prompt starts a new line; unseen tokens refused or <unk>."""
    tokens = tokenize(exported, prompt)
    unknown = list(dict.fromkeys(t for t in tokens if t not in exported.stoi))
    if unknown and not allow_unknown:
        shown = " ".join(repr(tok) for tok in unknown[:20])
        raise Refused(
            f"the prompt holds {len(unknown)} token(s) the model never saw: {shown}; "
            "remove them, or pass --unknown unk to map them to <unk>."
        )
    unk_id = exported.special["unk_id"]
    if not prompt:
        start = exported.special["eos"] if exported.level == "word" else "\n"
        return [exported.stoi.get(start, unk_id)]
    ids = [exported.stoi.get(tok, unk_id) for tok in tokens]
    if exported.level == "word" and not prompt.endswith("\n"):
        ids.pop()  # an open prompt continues its line
    if not ids:
        raise Refused(f"the prompt {prompt!r} holds no tokens; give some text or none at all.")
    return ids


def decode(exported: Exported, ids: list[int]) -> str:
    """Chars joined as they are (``<unk>`` as U+FFFD); words by spaces, ``<eos>`` a newline."""
    tokens = [exported.itos[i] for i in ids]
    special = exported.special
    if exported.level == "char":
        return "".join(special["char_unk"] if tok == special["unk"] else tok for tok in tokens)
    lines, words = [], []
    for tok in tokens:
        if tok == special["eos"]:
            lines.append(" ".join(words) + "\n")
            words = []
        else:
            words.append(tok)
    return "".join(lines) + " ".join(words)


def continue_text(exported: Exported, prompt: str, ids: list[int]) -> str:
    sep = " " if exported.level == "word" and prompt and not prompt[-1].isspace() else ""
    return prompt + sep + decode(exported, ids)


def next_token(
    log_probs: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator
) -> int:
    """One id drawn from ``softmax(log_probs / temperature)`` over the ``top_k`` likeliest."""
    scores = log_probs.astype(np.float64) / temperature
    if top_k is not None and 0 < top_k < scores.size:
        kth = np.partition(scores, -top_k)[-top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    return int(rng.choice(scores.size, p=probs / probs.sum()))


def generate(
    exported: Exported,
    ids: list[int],
    num_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    seed: int = 0,
) -> list[int]:
    """``num_tokens`` ids continuing ``ids``, the state carried from call to call."""
    manifest = exported.manifest
    state = [
        np.zeros([1 if size == "batch" else size for size in shape], np.float32)
        for shape in manifest["state_shapes"].values()
    ]
    rng = np.random.default_rng(seed)
    tokens = np.array([ids], np.int64)
    out: list[int] = []
    for _ in range(num_tokens):
        log_probs, *state = exported.session.run(
            None, dict(zip(manifest["inputs"], [tokens, *state], strict=True))
        )
        last = log_probs[0, -1]
        token = int(last.argmax()) if greedy else next_token(last, temperature, top_k, rng)
        out.append(token)
        tokens = np.array([[token]], np.int64)
    return out


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="the directory rnnlab-export format=onnx wrote")
    parser.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    parser.add_argument("--num-tokens", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=0.8, help="above 0")
    parser.add_argument("--top-k", type=int, default=None, help="keep the k likeliest, k >= 1")
    parser.add_argument("--greedy", action="store_true", help="always the likeliest token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unknown", choices=("error", "unk"), default="error")
    args = parser.parse_args(argv)
    if args.num_tokens < 0:
        parser.error(f"--num-tokens must be at least 0, got {args.num_tokens}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be above 0, got {args.temperature}; or use --greedy")
    if args.top_k is not None and args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    try:
        exported = load(args.directory)
        ids = prompt_ids(exported, args.prompt, args.unknown == "unk")
    except Refused as exc:
        sys.exit(f"error: {exc}")
    options = {"temperature": args.temperature, "top_k": args.top_k, "greedy": args.greedy}
    generated = generate(exported, ids, args.num_tokens, seed=args.seed, **options)
    print(continue_text(exported, args.prompt, generated))


if __name__ == "__main__":
    main()
