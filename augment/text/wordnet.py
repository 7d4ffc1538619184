"""WordNet 3.0 synonyms, offline: the Debian packages ``wordnet-base`` and ``wordnet-sense-index``
read through NLTK's WordNet reader.

NLTK expects a ``corpora/wordnet`` folder on ``nltk.data.path`` holding the database files and a
``lexnames`` file, which Debian does not ship. ``wordnet_root`` builds that folder once (copies
of the database files, as NLTK refuses files that resolve outside its data folder, and a
``lexnames`` generated from WordNet's fixed table of lexicographer files, lexnames(5WN)) under
``$AUGTRAIN_CACHE`` (default ``~/.cache/augtrain``) and puts it on ``nltk.data.path``. Nothing is
downloaded; a missing database raises ``WordNetMissing`` naming the packages to install.

    synonyms("movie")   # ('film', 'picture', 'moving picture', 'motion picture', 'flick', ...)
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
from pathlib import Path

DEBIAN_DIR = "/usr/share/wordnet"
DATABASE_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")) + \
    tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
SENSE_INDEX = "index.sense"

# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name; the syntactic category NLTK
# reads from the third column follows from the name (noun 1, verb 2, adj 3, adv 4).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissing(RuntimeError):
    """The WordNet database is not installed where it was looked for."""


def source_dir() -> Path:
    """Where the WordNet database is read from: ``$AUGTRAIN_WORDNET_DIR`` or Debian's folder."""
    return Path(os.environ.get("AUGTRAIN_WORDNET_DIR", DEBIAN_DIR))


def cache_dir() -> Path:
    return Path(os.environ.get("AUGTRAIN_CACHE", Path.home() / ".cache" / "augtrain"))


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<tab>name<tab>category`` per lexicographer file."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


_LOCK = threading.Lock()


def wordnet_root() -> Path:
    """The NLTK data folder holding ``corpora/wordnet`` (built on first use), already on
    ``nltk.data.path``."""
    source = source_dir()
    missing = [name for name in DATABASE_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetMissing(f"WordNet 3.0 is not installed in {source} (missing {', '.join(missing[:3])}"
                             f"{' ...' if len(missing) > 3 else ''}): install the Debian packages wordnet-base "
                             f"and wordnet-sense-index (`make install` does), or set AUGTRAIN_WORDNET_DIR")
    root = cache_dir() / "nltk_data"
    target = root / "corpora" / "wordnet"
    with _LOCK:
        if not (target / "lexnames").is_file():
            tmp = target.with_name(f".wordnet-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            for name in DATABASE_FILES + ((SENSE_INDEX,) if (source / SENSE_INDEX).is_file() else ()):
                shutil.copyfile(source / name, tmp / name)
            (tmp / "lexnames").write_text(lexnames_text())
            try:
                os.rename(tmp, target)
            except OSError:  # another process built it first
                shutil.rmtree(tmp, ignore_errors=True)
        import nltk

        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
    return root


@functools.lru_cache(maxsize=1)
def _reader():
    wordnet_root()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of ``word`` (lower case, any part of speech, in WordNet's sense order),
    without the word itself; multi-word lemmas are joined by spaces."""
    key = word.lower()
    if not key.replace("-", "").replace("'", "").isalpha():
        return ()
    seen: dict[str, None] = {}
    for synset in _reader().synsets(key):
        for lemma in synset.lemmas():
            name = lemma.name().replace("_", " ").lower()
            if name != key and name.replace(" ", "").replace("-", "").replace("'", "").isalpha():
                seen.setdefault(name)
    return tuple(seen)
