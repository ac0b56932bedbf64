"""Derive the BREEDS hierarchies shipped in ``c2f_attacks/hierarchies/`` from the published files.

    python scripts/derive_breeds.py PATH/TO/modified            # rewrite the four files
    python scripts/derive_breeds.py PATH/TO/modified --check    # compare, write nothing

``PATH/TO/modified`` holds ``class_hierarchy.txt``, ``node_names.txt`` and
``dataset_class_info.json`` from the BREEDS benchmarks repository
(github.com/MadryLab/BREEDS-Benchmarks, ``imagenet_class_hierarchy/modified/``, commit
:data:`SOURCE_COMMIT`): the modified WordNet hierarchy of Santurkar, Tsipras and Madry, "BREEDS:
Benchmarks for Subpopulation Shift" (ICLR 2021). Their SHA-256 must be :data:`SOURCE_SHA256`
and are recorded in every derived file's ``about``. The raw files are not part of this project.

The superclass selection follows the published BREEDS generator (``make_entity13`` and its
siblings in the MIT-licensed ``robustness`` library, ``split="rand"`` as in the benchmarks),
reimplemented here:

1. The hierarchy is the file's edges (parent, child), restricted to the ancestors of the 1000
   ImageNet classes. A node's level is its depth below the root ``n00001740`` (entity); BREEDS
   takes the longest path, which in the published file (a tree, checked here) is the only one.
2. Candidate superclasses are the nodes at the benchmark's level, below its ancestor node when it
   has one, in sorted id order; a candidate is kept when at least ``subclasses`` ImageNet classes
   lie below it (the search does not descend below an ImageNet class).
3. One ``numpy.random.RandomState(2)`` serves the whole benchmark. For each kept superclass in
   order: go down from it while the node has a single child; the population is the sorted
   ImageNet classes below that node's children; ``subclasses`` of them are drawn without
   replacement (``RandomState.choice``, the same stream as BREEDS' call on the class list). The
   first half is the source domain, the second the target domain; the hierarchy keeps both.

A derived file holds the groups (superclass -> classes by ImageNet synset id, in ImageNet order;
superclasses in BREEDS label order), every class's ancestor path from the root in the modified
hierarchy (for mistake severity), and ``about``: source, hashes, rules, the source/target split
and the names of the tree's nodes. Superclass names are the BREEDS node names up to the first
comma ("snake, serpent, ophidian" -> "snake").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2f_attacks._io import atomic_write_text
from c2f_attacks.hierarchies import BREEDS_FILES, imagenet_wnids
from c2f_attacks.hierarchy import Hierarchy

SOURCE_REPOSITORY = "https://github.com/MadryLab/BREEDS-Benchmarks"
SOURCE_COMMIT = "f83be509107e89f41dde0e4e8e7f8be051fbb891"
SOURCE_FOLDER = "imagenet_class_hierarchy/modified"
SOURCE_SHA256 = {
    "class_hierarchy.txt": "039cfaddf9732855b93f7899ba4b5ba6d80f8dbe15cfaad566f575b6c8ce0216",
    "node_names.txt": "322af45711ed69a7b199f11225bd964c7dae71df3c586498bef2f7c9e031dedb",
    "dataset_class_info.json": "be90503d57a001f95e094a81dc4de90772bfc58546ca58061d6474799829afd0",
}
ROOT = "n00001740"  # entity
SEED = 2
LICENSE_NOTE = (
    "The BREEDS-Benchmarks repository has no license file (checked at commit "
    f"{SOURCE_COMMIT[:7]}); this file holds facts derived from it (which ImageNet classes "
    "form each superclass and their paths in the modified hierarchy), not the published files. "
    "The selection rules are those of the BREEDS generator in MadryLab/robustness (MIT "
    "license), reimplemented. Node ids are WordNet 3.0 synset ids (WordNet license: "
    "WORDNET_LICENSE.txt) and BREEDS' own dummyN nodes. Cite Santurkar, Tsipras, Madry, "
    "BREEDS: Benchmarks for Subpopulation Shift, ICLR 2021."
)


@dataclass(frozen=True)
class BreedsRule:
    """One BREEDS benchmark: superclasses at ``level`` (below ``ancestor``), ``subclasses`` each."""

    title: str
    level: int
    ancestor: str | None
    subclasses: int


#: the four BREEDS benchmarks (the arguments of robustness' make_entity13 and its siblings)
BENCHMARKS: dict[str, BreedsRule] = {
    "breeds-entity13": BreedsRule("ENTITY-13", level=3, ancestor=None, subclasses=20),
    "breeds-entity30": BreedsRule("ENTITY-30", level=4, ancestor=None, subclasses=8),
    "breeds-living17": BreedsRule("LIVING-17", level=5, ancestor="n00004258", subclasses=4),
    "breeds-nonliving26": BreedsRule("NONLIVING-26", level=5, ancestor="n00021939", subclasses=4),
}


@dataclass(frozen=True)
class BreedsSource:
    """The three published files, parsed."""

    edges: list[tuple[str, str]]  # (parent, child)
    node_names: dict[str, str]
    classes: list[str]  # ImageNet synset ids by class number
    sha256: dict[str, str]


def read_source(folder: str | Path) -> BreedsSource:
    """Parse the three files in ``folder``; errors name the file and line."""
    folder = Path(folder)
    raw = {}
    for name in SOURCE_SHA256:
        try:
            raw[name] = (folder / name).read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {folder / name}: {err.strerror or err}") from None
    edges = []
    for number, line in enumerate(raw["class_hierarchy.txt"].decode().splitlines(), 1):
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{folder / 'class_hierarchy.txt'}:{number}: expected 'parent child'")
        edges.append((fields[0], fields[1]))
    node_names = {}
    for number, line in enumerate(raw["node_names.txt"].decode().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{folder / 'node_names.txt'}:{number}: expected 'id<TAB>name'")
        node_names[fields[0]] = fields[1]
    path = folder / "dataset_class_info.json"
    try:
        info = json.loads(raw["dataset_class_info.json"])
        classes = [wnid for _, wnid, _ in sorted(info)]
        numbers = [number for number, _, _ in sorted(info)]
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: expected a JSON list of [number, wnid, name] ({err})") from None
    if numbers != list(range(len(classes))):
        raise ValueError(f"{path}: class numbers are not 0..{len(classes) - 1}")
    sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in raw.items()}
    return BreedsSource(edges, node_names, classes, sha256)


class BreedsTree:
    """The hierarchy above ``classes`` (the leaves): the published edges restricted to the
    ancestors of the classes, checked to be a tree. Nodes not under ``root`` (one ImageNet class,
    toilet tissue, is in no edge of the published file) have no level, as in BREEDS."""

    def __init__(self, edges: Sequence[tuple[str, str]], classes: Sequence[str], root: str = ROOT):
        parents: dict[str, list[str]] = {}
        for parent, child in edges:
            parents.setdefault(child, []).append(parent)
        self.classes = set(classes)
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        todo, seen = list(classes), set(classes)
        while todo:  # upwards from the classes: only their ancestors matter
            node = todo.pop()
            up = sorted(set(parents.get(node, ())))
            if len(up) > 1:
                raise ValueError(f"node {node} has {len(up)} parents ({', '.join(up)}): not a tree")
            if not up:
                continue
            self.parent[node] = up[0]
            self.children.setdefault(up[0], []).append(node)
            if up[0] not in seen:
                seen.add(up[0])
                todo.append(up[0])
        for node in self.children:
            self.children[node].sort()
        below = [c for c in classes if c in self.children]
        if below:
            raise ValueError(f"ImageNet class {below[0]} has nodes below it in the hierarchy")
        self.root = root
        #: depth below the root of every node under it
        self.levels: dict[str, int] = {}
        todo = [(root, 0)]
        while todo:
            node, level = todo.pop()
            self.levels[node] = level
            todo.extend((child, level + 1) for child in self.children.get(node, ()))

    def path(self, node: str) -> list[str]:
        """The nodes from the root down to ``node`` (under the root), both included."""
        path = [node]
        while path[-1] != self.root:
            path.append(self.parent[path[-1]])
        return path[::-1]

    def classes_below(self, node: str) -> list[str]:
        """The classes at or below ``node``, sorted."""
        if node in self.classes:
            return [node]
        return sorted(c for child in self.children.get(node, ()) for c in self.classes_below(child))

    def nodes_at(self, level: int, ancestor: str | None = None) -> list[str]:
        """Sorted ids of the nodes at ``level``, only those below ``ancestor`` if given."""
        return sorted(
            n
            for n, at in self.levels.items()
            if at == level and (ancestor is None or ancestor in self.path(n))
        )


@dataclass(frozen=True)
class Superclass:
    node: str
    source: list[str]
    target: list[str]


def select(tree: BreedsTree, rule: BreedsRule, seed: int = SEED) -> list[Superclass]:
    """The superclasses of ``rule`` and their source / target classes (module docstring)."""
    if rule.subclasses % 2:
        raise ValueError(f"{rule.title}: subclasses per superclass must be even (two domains)")
    kept = [
        n
        for n in tree.nodes_at(rule.level, rule.ancestor)
        if len(tree.classes_below(n)) >= rule.subclasses
    ]
    if not kept:
        raise ValueError(f"{rule.title}: no node at level {rule.level} has enough classes below")
    rng = np.random.RandomState(seed)
    half = rule.subclasses // 2
    out = []
    for node in kept:
        branch = node
        while len(tree.children.get(branch, ())) == 1:
            branch = tree.children[branch][0]
        population = sorted(c for child in tree.children[branch] for c in tree.classes_below(child))
        # choice(len(population)) draws the same indices as BREEDS' choice(population)
        drawn = [population[i] for i in rng.choice(len(population), rule.subclasses, replace=False)]
        out.append(Superclass(node, drawn[:half], drawn[half:]))
    return out


def coarse_name(node_names: Mapping[str, str], node: str) -> str:
    return node_names.get(node, node).split(",")[0].strip()


def derive(source: BreedsSource, name: str, rule: BreedsRule) -> dict:
    """The JSON document of benchmark ``name`` (a hierarchy with a tree, plus ``about``)."""
    tree = BreedsTree(source.edges, source.classes)
    number = {wnid: i for i, wnid in enumerate(source.classes)}
    superclasses = select(tree, rule)
    names = [coarse_name(source.node_names, s.node) for s in superclasses]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise ValueError(f"{rule.title}: two superclasses are named {clash!r}")
    groups = {n: sorted(s.source + s.target, key=number.get) for n, s in zip(names, superclasses)}
    ancestors = {c: tree.path(c)[:-1] for members in groups.values() for c in members}
    nodes = sorted({node for path in ancestors.values() for node in path})
    about = {
        "name": name,
        "title": f"BREEDS {rule.title}",
        "source": f"{SOURCE_REPOSITORY} at commit {SOURCE_COMMIT}, {SOURCE_FOLDER}/",
        "source_sha256": source.sha256,
        "license": LICENSE_NOTE,
        "derived_by": "scripts/derive_breeds.py",
        "rules": {
            "level": rule.level,
            "ancestor": rule.ancestor,
            "split": "rand",
            "seed": SEED,
            "subclasses_per_superclass": rule.subclasses,
        },
        "superclass_nodes": {n: s.node for n, s in zip(names, superclasses)},
        "source_domain": {n: sorted(s.source, key=number.get) for n, s in zip(names, superclasses)},
        "target_domain": {n: sorted(s.target, key=number.get) for n, s in zip(names, superclasses)},
        "node_names": {n: source.node_names.get(n, n) for n in nodes},
    }
    document = {"about": about, "groups": groups, "ancestors": ancestors}
    Hierarchy.from_dict(document)  # the derived tree passes the library's own checks
    return document


def document_json(document: Mapping) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with the three BREEDS files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "c2f_attacks" / "hierarchies")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args(argv)
    try:
        source = read_source(args.source)
        wrong = [f for f, digest in source.sha256.items() if digest != SOURCE_SHA256[f]]
        if wrong:
            raise ValueError(
                f"{args.source / wrong[0]} is not the published file (sha256 "
                f"{source.sha256[wrong[0]]}, expected {SOURCE_SHA256[wrong[0]]})"
            )
        if source.classes != imagenet_wnids():
            raise ValueError("dataset_class_info.json does not list the ImageNet-1k classes")
        documents = {
            name: document_json(derive(source, name, rule)) for name, rule in BENCHMARKS.items()
        }
    except ValueError as err:
        print(f"derive_breeds: error: {err}", file=sys.stderr)
        return 2
    stale = []
    for name, text in documents.items():
        path = args.out / BREEDS_FILES[name]
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            atomic_write_text(path, text)
            print(f"wrote {path}")
    if stale:
        print(f"derive_breeds: differs from the derivation: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
