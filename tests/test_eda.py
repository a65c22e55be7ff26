"""EDA caption augmentation (CleanCLIP's text view) with WordNet read from
its database files: a tiny database in the real wndb format, and the real
one where Debian's wordnet-base is installed."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from benchmark.errors import ConfigError, DataNotFoundError
from benchmark.text.eda import EDA, clean
from benchmark.text.wordnet import WordNet


def _fake_wordnet(root: Path) -> Path:
    """A database where 'dog' has two noun synsets and one verb synset."""
    root.mkdir(parents=True, exist_ok=True)
    noun_lines = ["02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 000 | a dog",
                  "10114209 18 n 02 frump 0 dog 0 000 | an unattractive woman"]
    header = "  1 This is a licence header line\n"
    data, offsets = header, []
    for line in noun_lines:
        offsets.append(len(data.encode()))
        data += line + "\n"
    (root / "data.noun").write_text(data)
    (root / "index.noun").write_text(header + f"dog n 2 1 @ 2 1 {offsets[0]:08d} {offsets[1]:08d}  \n")
    verb = "01979462 38 v 02 chase 0 dog 0 000 | go after"
    (root / "data.verb").write_text(header + verb + "\n")
    (root / "index.verb").write_text(header + f"dog v 1 1 @ 1 0 {len(header.encode()):08d}  \n")
    for pos in ("adj", "adv"):
        (root / f"data.{pos}").write_text(header)
        (root / f"index.{pos}").write_text(header)
    return root


def test_synonyms_are_every_synsets_lemmas_cleaned(tmp_path):
    wordnet = WordNet(_fake_wordnet(tmp_path / "wn"))
    assert wordnet.synonyms("dog") == ("domestic dog", "canis familiaris", "frump", "chase")
    assert wordnet.synonyms("cat") == ()


def test_a_missing_database_names_the_package_and_variable(tmp_path):
    with pytest.raises(DataNotFoundError, match="wordnet-base.*BDBENCH_WORDNET_DIR"):
        WordNet(tmp_path / "nothing")


@pytest.mark.skipif(not Path("/usr/share/wordnet/index.noun").is_file(), reason="wordnet-base absent")
def test_the_real_database():
    assert "automobile" in WordNet().synonyms("car")


def test_each_operation_follows_eda(tmp_path):
    eda = EDA(wordnet_dir=_fake_wordnet(tmp_path / "wn"))
    words = "the dog runs after the ball in the park today now".split()
    rng = random.Random(0)
    swapped = eda.random_swap(words, 1, rng)
    assert Counter(swapped) == Counter(words)
    assert all(eda.random_deletion(["one"], 0.9, random.Random(s)) == ["one"] for s in range(5))
    assert all(eda.random_deletion(words, 0.99, random.Random(s)) for s in range(20))
    replaced = eda.synonym_replacement(words, 1, random.Random(1))
    assert "dog" not in replaced and len(replaced) >= len(words)
    inserted = eda.random_insertion(words, 1, random.Random(2))
    assert len(inserted) > len(words) and Counter(words) - Counter(inserted) == Counter()


def test_augmentation_is_seeded_per_caption_and_position_independent():
    eda = EDA(operations=("rs", "rd"), wordnet_dir="/nonexistent")  # no WordNet needed
    captions = [f"a photo of a small dog number {i} in the grass" for i in range(20)]
    first = eda.augment_all(captions, seed=0)
    assert first == eda.augment_all(captions, seed=0)
    assert first != eda.augment_all(captions, seed=1)
    assert eda.augment_all(captions[:5], seed=0) == first[:5]
    assert eda.augment("", random.Random(0)) == ""
    assert clean("A Dog's-Life!") == "a dogs life"


def test_reference_defaults_and_bad_operations():
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(EDA).parameters.items()}
    assert defaults["alpha_sr"] == defaults["alpha_ri"] == defaults["alpha_rs"] == defaults["alpha_rd"] == 0.1
    assert defaults["operations"] == ("sr", "ri", "rs", "rd")
    with pytest.raises(ConfigError, match="subset of sr, ri, rs, rd"):
        EDA(operations=("xx",))
