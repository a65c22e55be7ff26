"""EDA caption augmentation (Wei & Zou, EMNLP 2019; jasonwei20/eda_nlp
code/eda.py), as CleanCLIP uses it (nishadsinghi/CleanCLIP src/data.py
`_augment_text`: one augmented caption per caption, alpha 0.1 for synonym
replacement (sr), random insertion (ri), random swap (rs) and random deletion
(rd)): the caption is cleaned (lower case, letters and spaces), one candidate
is produced per operation, and one of the four is kept at random.

Synonyms come from the WordNet 3.0 files on disk (benchmark/text/wordnet.py)
instead of NLTK's runtime download. Deviations, named: `operations` may drop
operations (("rs", "rd") needs no WordNet; the default is the reference's
four); synonyms are taken in WordNet's order rather than from a Python set,
so results do not depend on string hashing; every caption gets its own
random generator seeded from (seed, position), so the augmentation is
reproducible.
"""
from __future__ import annotations

import random
import re

from benchmark.errors import ConfigError
from benchmark.text.wordnet import WordNet

OPERATIONS = ("sr", "ri", "rs", "rd")
# eda_nlp's stop words (never replaced by synonyms)
STOP_WORDS = frozenset("""i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
she her hers herself it its itself they them their theirs themselves what which who whom this that these those am
is are was were be been being have has had having do does did doing a an the and but if or because as until while
of at by for with about against between into through during before after above below to from up down in out on off
over under again further then once here there when where why how all any both each few more most other some such no
nor not only own same so than too very s t can will just don should now""".split())


def clean(caption: str) -> str:
    text = caption.replace("’", "").replace("'", "").replace("-", " ").replace("\t", " ").replace("\n", " ").lower()
    text = "".join(ch if ch == " " or "a" <= ch <= "z" else " " for ch in text)
    return re.sub(" +", " ", text).strip()


class EDA:
    def __init__(self, alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1, alpha_rd: float = 0.1,
                 operations: tuple[str, ...] = OPERATIONS, wordnet_dir=None):
        unknown = [op for op in operations if op not in OPERATIONS]
        if unknown or not operations:
            raise ConfigError(f"EDA operations {list(operations)} not allowed; choose a non-empty subset of "
                              f"{', '.join(OPERATIONS)}")
        self.alpha = {"sr": alpha_sr, "ri": alpha_ri, "rs": alpha_rs, "rd": alpha_rd}
        self.operations = tuple(operations)
        needs_wordnet = any(op in ("sr", "ri") for op in self.operations)
        self.wordnet = WordNet(wordnet_dir) if needs_wordnet else None

    def _synonyms(self, word: str) -> tuple[str, ...]:
        return self.wordnet.synonyms(word) if self.wordnet is not None else ()

    def synonym_replacement(self, words: list[str], n: int, rng: random.Random) -> list[str]:
        out = list(words)
        candidates = list(dict.fromkeys(w for w in words if w not in STOP_WORDS))
        rng.shuffle(candidates)
        replaced = 0
        for word in candidates:
            synonyms = self._synonyms(word)
            if synonyms:
                choice = rng.choice(synonyms)
                out = [choice if w == word else w for w in out]
                replaced += 1
            if replaced >= n:
                break
        return " ".join(out).split(" ")

    def random_insertion(self, words: list[str], n: int, rng: random.Random) -> list[str]:
        out = list(words)
        for _ in range(n):
            for _attempt in range(10):  # eda_nlp gives up on a word after 10 tries
                synonyms = self._synonyms(out[rng.randrange(len(out))])
                if synonyms:
                    out.insert(rng.randrange(len(out) + 1), rng.choice(synonyms))
                    break
        return out

    @staticmethod
    def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
        out = list(words)
        for _ in range(n):
            i = rng.randrange(len(out))
            j = i
            for _attempt in range(3):  # eda_nlp retries three times for a different position
                j = rng.randrange(len(out))
                if j != i:
                    break
            out[i], out[j] = out[j], out[i]
        return out

    @staticmethod
    def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
        if len(words) == 1:
            return list(words)
        kept = [w for w in words if rng.random() > p]
        return kept or [words[rng.randrange(len(words))]]

    def augment(self, caption: str, rng: random.Random) -> str:
        words = [w for w in clean(caption).split(" ") if w]
        if not words:
            return clean(caption)
        counts = {op: max(1, int(self.alpha[op] * len(words))) for op in ("sr", "ri", "rs")}
        candidates = []
        for op in self.operations:
            if op == "sr":
                candidates.append(self.synonym_replacement(words, counts["sr"], rng))
            elif op == "ri":
                candidates.append(self.random_insertion(words, counts["ri"], rng))
            elif op == "rs":
                candidates.append(self.random_swap(words, counts["rs"], rng))
            else:
                candidates.append(self.random_deletion(words, self.alpha["rd"], rng))
        rng.shuffle(candidates)
        return clean(" ".join(candidates[0]))

    def augment_all(self, captions: list[str], seed: int) -> list[str]:
        return [self.augment(c, random.Random(f"{seed}:{i}")) for i, c in enumerate(captions)]
