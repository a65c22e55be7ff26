"""Synonyms from the WordNet 3.0 database files (wndb(5WN) format), read
directly, so EDA works offline: Debian's `wordnet-base` installs them in
/usr/share/wordnet (elsewhere: BDBENCH_WORDNET_DIR, or the `dict/` folder of
any WordNet 3.0 download). The same lemmas NLTK's `wordnet.synsets(w)` /
`lemmas()` return, without NLTK or its runtime download."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from benchmark.errors import DataNotFoundError

DEFAULT_DIR = Path("/usr/share/wordnet")
POS = ("noun", "verb", "adj", "adv")


def wordnet_dir(directory: str | Path | None = None) -> Path:
    return Path(directory or os.environ.get("BDBENCH_WORDNET_DIR") or DEFAULT_DIR)


class WordNet:
    def __init__(self, directory: str | Path | None = None):
        self.directory = wordnet_dir(directory)
        if not all((self.directory / f"index.{p}").is_file() and (self.directory / f"data.{p}").is_file()
                   for p in POS):
            raise DataNotFoundError(f"WordNet database not found in {self.directory} (needs index.noun/verb/adj/adv "
                                    f"and data.*): apt install wordnet-base, or set BDBENCH_WORDNET_DIR")
        self._index: dict[str, dict[str, list[int]]] | None = None
        self._files = {}
        self.synonyms = lru_cache(maxsize=None)(self._synonyms)

    def _load_index(self) -> dict[str, dict[str, list[int]]]:
        index: dict[str, dict[str, list[int]]] = {}
        for pos in POS:
            table = index[pos] = {}
            with open(self.directory / f"index.{pos}", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(" "):
                        continue  # licence header lines start with two spaces
                    parts = line.split()
                    # lemma pos synset_cnt p_cnt [ptr_symbol]*p_cnt sense_cnt tagsense_cnt offsets...
                    synsets, pointers = int(parts[2]), int(parts[3])
                    table[parts[0]] = [int(o) for o in parts[6 + pointers:6 + pointers + synsets]]
        return index

    def _lemmas(self, pos: str, offset: int) -> list[str]:
        if pos not in self._files:
            self._files[pos] = open(self.directory / f"data.{pos}", "rb")  # noqa: SIM115 (kept open, read by offset)
        f = self._files[pos]
        f.seek(offset)
        parts = f.readline().decode("utf-8", errors="replace").split()
        # offset lex_filenum ss_type w_cnt(hex) [word lex_id]*w_cnt ...
        count = int(parts[3], 16)
        return [parts[4 + 2 * i] for i in range(count)]

    def _synonyms(self, word: str) -> tuple[str, ...]:
        if self._index is None:
            self._index = self._load_index()
        key = word.lower().replace(" ", "_")
        found: list[str] = []
        for pos in POS:
            for offset in self._index[pos].get(key, []):
                for lemma in self._lemmas(pos, offset):
                    # adjective lemmas may carry a marker such as "(a)"
                    name = lemma.split("(")[0].replace("_", " ").replace("-", " ").lower()
                    name = "".join(ch for ch in name if ch == " " or "a" <= ch <= "z")
                    if name and name != word and name not in found:
                        found.append(name)
        return tuple(found)
