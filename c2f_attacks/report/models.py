"""Model cards: what a results folder says about each model, with its checkpoint's own metadata.

For every model in the leaderboards: the ``model_hash`` the rows were measured with, clean
accuracy (from the run with the most images), robust accuracy (``robustness_<model>.json``),
and, for a model shipped as a checkpoint, its architecture, hierarchy, training settings, the
file's SHA-256 and whether the checkpoint's ``model_hash`` today equals the results' (a card
says so when the results were measured with other weights).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from c2f_attacks.errors import UserError
from c2f_attacks.report import fmt
from c2f_attacks.report.sources import Results


@dataclass
class ModelCard:
    name: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _settings(values: Mapping[str, Any]) -> str:
    """``key=value`` pairs in key order; floats with 4 significant digits."""

    def text(v: Any) -> str:
        if isinstance(v, float):
            return format(v, ".4g")
        if isinstance(v, Mapping):
            return "{" + _settings(v) + "}"
        return str(v)

    return ", ".join(f"{k}={text(v)}" for k, v in sorted(values.items()))


def _checkpoint_facts(name: str, hashes: set[str]) -> list[tuple[str, str]] | None:
    """Facts from a shipped checkpoint, or None when ``name`` is not one."""
    from c2f_attacks.models import list_models
    from c2f_attacks.models.zoo import load_checkpoint, shipped_checkpoint
    from c2f_attacks.runner.execute import model_hash

    if name not in list_models() or not shipped_checkpoint(name).is_file():
        return None
    path = shipped_checkpoint(name)
    model = load_checkpoint(path)  # validated, weights checked finite
    now = model_hash(model)
    params = sum(p.numel() for p in model.parameters())
    hierarchy = model.hierarchy.to_dict()
    fine = sum(len(v) for v in hierarchy.values())
    groups = "; ".join(f"{c}: {', '.join(f)}" for c, f in hierarchy.items())
    config = model.cfg.to_dict() if hasattr(model, "cfg") else {}
    meta = getattr(model, "checkpoint_meta", None) or {}
    facts = [
        ("checkpoint", f"c2f_attacks/checkpoints/{path.name} (SHA-256 "
                       f"{hashlib.sha256(path.read_bytes()).hexdigest()[:16]})"),
        ("architecture", f"{type(model).__name__}, {params:,} parameters: {_settings(config)}"),
        ("hierarchy", f"{len(hierarchy)} coarse x {fine} fine classes ({groups})"),
    ]  # fmt: skip
    if "train_config" in meta:
        data = f" on {meta['dataset']}" if "dataset" in meta else ""
        facts.append(("training", f"{_settings(meta['train_config'])}{data}"))
    if "adversarial" in meta:
        adv = dict(meta["adversarial"])
        facts.append(("adversarial training", _settings(adv)))
    if "init" in meta and isinstance(meta["init"], Mapping):
        init = meta["init"]
        facts.append(("initialised from", f"{init.get('path', '')} (SHA-256 "
                                          f"{str(init.get('sha256', ''))[:16]})"))  # fmt: skip
    if hashes:
        same = now in hashes
        facts.append(("weights", f"model_hash {now}: "
                      + ("the weights the results were measured with" if same else
                         "differs from the results' model_hash: they were measured with other "
                         "weights")))  # fmt: skip
    return facts


def model_cards(results: Results) -> list[ModelCard]:
    """One card per model of the leaderboards, in name order."""
    return results.memo("model_cards", lambda: _cards(results))


def _cards(results: Results) -> list[ModelCard]:
    rows = [(run, row) for run in results.runs for row in run.leaderboard.to_dict("records")]
    cards = []
    for name in sorted({str(row["model"]) for _, row in rows}):
        mine = [(run, row) for run, row in rows if row["model"] == name]
        hashes = {str(r["model_hash"]) for _, r in mine if isinstance(r.get("model_hash"), str)}
        card = ModelCard(name)
        card.facts.append(("model_hash in the results", ", ".join(sorted(hashes)) or "none"))
        checkpoint = _checkpoint_facts(name, hashes)
        if checkpoint is None:
            card.facts.append(("checkpoint", "none shipped (built in code or from a path)"))
        else:
            card.facts += checkpoint
        run, row = max(mine, key=lambda rr: (rr[1]["n"], -results.runs.index(rr[0])))
        card.facts.append((
            "clean accuracy",
            f"coarse {fmt.num(row.get('clean_acc_coarse'))}, fine "
            f"{fmt.num(row.get('clean_acc_fine'))} on {row['n']} {row['dataset']}/{row['split']} "
            "images",
        ))  # fmt: skip
        card.sources.append(f"{run.shown}/leaderboard.csv")
        for path in results.glob(f"robustness_{name}.json"):
            card.facts += _robust_facts(results.json(path), results.show(path))
            card.sources.append(results.show(path))
        cards.append(card)
    return cards


def _robust_facts(data: Mapping[str, Any], shown: str) -> list[tuple[str, str]]:
    """Robust accuracy per stage and budget: the per-image worst case over the file's attacks
    (its ``worst`` rows), else each attack."""
    robust = data.get("robust")
    if not isinstance(robust, list):
        raise UserError(f"{shown}: no 'robust' list")
    rows = [r for r in robust if r.get("attack") == "worst"] or robust
    attacks = sorted({str(r.get("attack")) for r in robust} - {"worst"})
    facts = []
    for r in sorted(rows, key=lambda r: (str(r.get("stage")), float(r.get("eps_255", 0)),
                                         str(r.get("attack")))):  # fmt: skip
        try:
            what = f"{r['stage']} stage, l-inf {fmt.num(r['eps_255'], 0)}/255"
            value = (f"{fmt.percent(r['acc'])} [{fmt.percent(r['lo'])}, {fmt.percent(r['hi'])}]"
                     f" on {r['n']} images")  # fmt: skip
        except KeyError as err:
            raise UserError(f"{shown}: a 'robust' entry has no {err.args[0]!r}") from None
        label = "worst of " + ", ".join(attacks) if r.get("attack") == "worst" else r["attack"]
        facts.append((f"robust accuracy, {what}", f"{value} ({label})"))
    return facts
