"""The text ops: EDA's four (Wei and Zou 2019: synonym replacement, random insertion, random
swap, random deletion) and AEDA's punctuation insertion (Karimi et al. 2021). ``OPS`` is the
text catalogue's op table (``augtrain.augment.text`` registers it).

A text is a ``str``; ops work on its whitespace-separated words and keep each word's leading
and trailing punctuation. Parameters are floats like every op's: the fraction ``alpha`` and a
``seed`` drawn by ``sample``, from which ``apply`` draws its choices, so the same draw gives the
same text on every backend and in every process.

=================  ===================================================================  ==========
op                 at magnitude m (``alpha = m / 20``; n = max(1, int(alpha * words)))    m = 10
=================  ===================================================================  ==========
synonym_replace    n distinct non-stop words with a WordNet synonym get a random one       alpha 0.5
random_insert      n times, a random synonym of a random non-stop word at a random place
random_swap        n times, two random words swap places
random_delete      each word is deleted with probability alpha (one word always stays)
punctuation        1 to max(1, round(m / 10 * words / 3)) marks from . ; ? : ! , inserted   AEDA's 1/3
                   between words (AEDA's setting at m = 10)
=================  ===================================================================  ==========

EDA's recommended alpha is 0.05 (m = 1) for 500 to 2,000 training texts and 0.1 (m = 2) above.
Guards (the cases EDA's reference code and TextAttack had to fix): a text with no word that has
a synonym is returned unchanged, a word repeated in the text is replaced once per draw, a text of
one word is never swapped or emptied, and every loop is bounded by the number of words.
"""

from __future__ import annotations

import re

import numpy as np

from augtrain.augment.registry import OpDef, Params
from augtrain.augment.text.wordnet import synonyms

# English function words EDA leaves alone (articles, pronouns, auxiliaries, prepositions,
# conjunctions): replacing them changes grammar, not meaning.
STOP_WORDS = frozenset("""
a an the and or but nor so yet if then else than as of at by for from in into onto on off out over under
to up down with without within about above below across after against along among around before behind
between beyond during except inside near since through throughout toward towards until upon via
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she
her hers herself it its itself they them their theirs themselves what which who whom whose this that
these those am is are was were be been being have has had having do does did doing will would shall
should can could may might must ought not no don't isn't aren't wasn't weren't doesn't didn't won't
can't couldn't shouldn't wouldn't it's i'm i've i'd i'll you're you've he's she's that's there's
there here when where why how all any both each few more most other some such only own same too very
just also again further once s t
""".split())

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)
PUNCTUATION = (".", ";", "?", ":", "!", ",")


def split_word(token: str) -> tuple[str, str, str]:
    """``'(great!'`` -> ``('(', 'great', '!')``: leading punctuation, the word, trailing punctuation."""
    match = _CORE.match(token)
    assert match is not None  # the pattern matches every string
    return match[1], match[2], match[3]


def _level(m: float) -> float:
    return float(m) / 10.0


def _count(alpha: float, words: int) -> int:
    return max(1, int(alpha * words))  # EDA: max(1, int(alpha * words))


def _sample_alpha(rng: np.random.Generator, m: float, args, h, w, size) -> Params:
    return {"alpha": _level(m) / 2.0, "seed": float(rng.integers(0, 2**31 - 1))}


def _rng(params: Params) -> np.random.Generator:
    return np.random.default_rng(int(params["seed"]))


def _candidates(words: list[str]) -> list[int]:
    """Indices of the words EDA may replace: not stop words, with at least one synonym, each
    distinct word once (its first occurrence)."""
    seen: set[str] = set()
    out = []
    for i, token in enumerate(words):
        core = split_word(token)[1].lower()
        if core and core not in STOP_WORDS and core not in seen and synonyms(core):
            seen.add(core)
            out.append(i)
    return out


def _match_case(word: str, like: str) -> str:
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def synonym_replace(text: str, params: Params) -> str:
    words = text.split()
    candidates = _candidates(words)
    if not candidates:
        return text
    rng = _rng(params)
    n = min(len(candidates), _count(params["alpha"], len(words)))
    for i in rng.permutation(candidates)[:n]:
        lead, core, trail = split_word(words[int(i)])
        options = synonyms(core.lower())
        words[int(i)] = lead + _match_case(options[int(rng.integers(len(options)))], core) + trail
    return " ".join(words)


def random_insert(text: str, params: Params) -> str:
    words = text.split()
    candidates = _candidates(words)
    if not candidates:
        return text
    rng = _rng(params)
    for _ in range(_count(params["alpha"], len(words))):
        core = split_word(words[int(rng.choice(candidates))])[1].lower()
        options = synonyms(core)
        at = int(rng.integers(len(words) + 1))
        words.insert(at, options[int(rng.integers(len(options)))])
        candidates = [c + 1 if c >= at else c for c in candidates]
    return " ".join(words)


def random_swap(text: str, params: Params) -> str:
    words = text.split()
    if len(words) < 2:
        return text
    rng = _rng(params)
    for _ in range(_count(params["alpha"], len(words))):
        i, j = rng.choice(len(words), size=2, replace=False)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)


def random_delete(text: str, params: Params) -> str:
    words = text.split()
    if len(words) < 2:
        return text
    rng = _rng(params)
    keep = rng.random(len(words)) >= params["alpha"]
    if not keep.any():
        keep[int(rng.integers(len(words)))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def _sample_punctuation(rng: np.random.Generator, m: float, args, h, w, size) -> Params:
    return {"level": _level(m), "seed": float(rng.integers(0, 2**31 - 1))}


def punctuation(text: str, params: Params) -> str:
    words = text.split()
    if not words:
        return text
    rng = _rng(params)
    most = max(1, int(round(params["level"] * len(words) / 3)))
    count = int(rng.integers(1, most + 1))
    places = np.sort(rng.choice(len(words) + 1, size=min(count, len(words) + 1), replace=False))
    out: list[str] = []
    for i, word in enumerate(words + [None]):
        if i in places:
            out.append(PUNCTUATION[int(rng.integers(len(PUNCTUATION)))])
        if word is not None:
            out.append(word)
    return " ".join(out)


def _op(name: str, apply, sample=_sample_alpha, kind: str = "word") -> OpDef:
    names = ("level", "seed") if sample is _sample_punctuation else ("alpha", "seed")
    return OpDef(name, sample, apply, names, uses_magnitude=True, kind=kind)


OPS: dict[str, OpDef] = {
    op.name: op for op in (
        _op("synonym_replace", synonym_replace),
        _op("random_insert", random_insert),
        _op("random_swap", random_swap, kind="order"),
        _op("random_delete", random_delete, kind="order"),
        _op("punctuation", punctuation, _sample_punctuation, kind="order"),
    )
}
