"""Face attributes and the grammar that writes captions about them (MM-CelebA-HQ style).

`caption(attrs, rng)` mentions a random subset of the known attributes (2 to 5, more when
some are required) in one of several sentence forms and returns the text together with
`mentioned`, exactly the attributes the text implies. A gendered word or pronoun counts as
mentioning gender; a negative ("without glasses") counts as mentioning the attribute with
value 0; anything not mentioned is left open by the text.

Two disjoint vocabularies: TRAIN ("woman", "hat", "glasses", "smiling", "grey", ...) and
HELDOUT paraphrases ("lady", "cap", "spectacles", "grinning", "silver", "in her forties", ...)
with their own sentence forms ("Portrait of ...", "Here we see ... who ..."). No held-out
attribute word or frame ever appears in a training caption, so held-out prompts test whether
a generator follows paraphrases through the text encoder.
"""
from __future__ import annotations

import numpy as np

# Attribute -> class names; labels are indices into these lists (-1 = unknown / not applicable).
ATTRIBUTES: dict[str, list[str]] = {
    "gender": ["female", "male"],
    "age": ["young", "middle-aged", "old"],
    "hair_color": ["black", "brown", "blond", "red", "grey"],
    "hair_style": ["bald", "short", "long"],
    "hat": ["no", "yes"],
    "eyeglasses": ["no", "yes"],
    "smiling": ["no", "yes"],
    "beard": ["no", "yes"],
    "lipstick": ["no", "yes"],
    "earrings": ["no", "yes"],
    "skin_tone": ["light", "medium", "dark"],
    "background": ["white", "blue", "green", "purple"],
}
BALD = 0
FEMALE, MALE = 0, 1

# Phrases per (attribute, value) and role:
#   "adj"  before the noun ("a smiling old woman"),
#   "with" after the noun ("a woman wearing a hat"),
#   "pred" after a singular subject ("She wears glasses.").
# {pos} becomes her / his / their. Hair colour and style are joined into one phrase by `_hair`.
_TRAIN_PHRASES: dict[tuple[str, int], dict[str, list[str]]] = {
    ("age", 0): {"adj": ["young"], "pred": ["is young"]},
    ("age", 1): {"adj": ["middle-aged"], "pred": ["is middle-aged"]},
    ("age", 2): {"adj": ["old"], "pred": ["is old"]},
    ("hair_style", BALD): {"adj": ["bald"], "with": ["with a bald head"], "pred": ["is bald", "has a bald head"]},
    ("hat", 1): {"with": ["wearing a hat", "with a hat"], "pred": ["is wearing a hat", "wears a hat", "has a hat on"]},
    ("hat", 0): {"with": ["without a hat"], "pred": ["is not wearing a hat", "has no hat"]},
    ("eyeglasses", 1): {"with": ["wearing glasses", "with eyeglasses", "wearing eyeglasses"],
                        "pred": ["wears glasses", "wears eyeglasses", "is wearing glasses"]},
    ("eyeglasses", 0): {"with": ["without glasses"], "pred": ["does not wear glasses", "has no glasses"]},
    ("smiling", 1): {"adj": ["smiling"], "with": ["smiling"], "pred": ["is smiling", "smiles"]},
    ("smiling", 0): {"with": ["with a serious expression", "not smiling"], "pred": ["is not smiling", "looks serious"]},
    ("beard", 1): {"adj": ["bearded"], "with": ["with a beard"], "pred": ["has a beard"]},
    ("beard", 0): {"with": ["without a beard"], "pred": ["has no beard"]},
    ("lipstick", 1): {"with": ["wearing lipstick", "with lipstick"], "pred": ["wears lipstick", "is wearing lipstick"]},
    ("lipstick", 0): {"with": ["without lipstick"], "pred": ["wears no lipstick", "is not wearing lipstick"]},
    ("earrings", 1): {"with": ["wearing earrings", "with earrings"], "pred": ["wears earrings", "has earrings"]},
    ("earrings", 0): {"with": ["without earrings"], "pred": ["wears no earrings"]},
    ("skin_tone", 0): {"with": ["with light skin", "with pale skin"], "pred": ["has light skin", "has pale skin"]},
    ("skin_tone", 1): {"with": ["with tan skin"], "pred": ["has tan skin"]},
    ("skin_tone", 2): {"with": ["with dark skin"], "pred": ["has dark skin"]},
}
_HELDOUT_PHRASES: dict[tuple[str, int], dict[str, list[str]]] = {
    ("age", 0): {"adj": ["youthful"], "with": ["in {pos} twenties"],
                 "pred": ["is in {pos} twenties", "looks youthful"]},
    ("age", 1): {"with": ["in {pos} forties", "in {pos} fifties"],
                 "pred": ["is in {pos} forties", "is in {pos} fifties"]},
    ("age", 2): {"adj": ["elderly", "senior"], "with": ["in {pos} seventies"],
                 "pred": ["is elderly", "is in {pos} seventies"]},
    ("hair_style", BALD): {"adj": ["shaven-headed"], "with": ["with a shaved head", "with a hairless scalp"],
                           "pred": ["has a shaved head", "has a hairless scalp"]},
    ("hat", 1): {"with": ["sporting a cap", "in a cap", "with headwear"], "pred": ["sports a cap", "has headwear"]},
    ("hat", 0): {"adj": ["bareheaded"], "with": ["with an uncovered head"], "pred": ["is bareheaded"]},
    ("eyeglasses", 1): {"adj": ["bespectacled"], "with": ["with spectacles", "sporting spectacles"],
                        "pred": ["wears spectacles", "sports spectacles"]},
    ("eyeglasses", 0): {"with": ["lacking spectacles"], "pred": ["lacks spectacles"]},
    ("smiling", 1): {"adj": ["grinning", "beaming"], "with": ["grinning", "with a broad grin"],
                     "pred": ["is grinning", "grins", "is beaming"]},
    ("smiling", 0): {"adj": ["unsmiling"], "with": ["with a solemn face", "with a neutral face"],
                     "pred": ["looks solemn", "keeps a straight face"]},
    ("beard", 1): {"adj": ["whiskered"], "with": ["with facial hair", "with whiskers"],
                   "pred": ["has facial hair", "sports whiskers"]},
    ("beard", 0): {"adj": ["clean-shaven"], "with": ["with a smooth chin"], "pred": ["is clean-shaven"]},
    ("lipstick", 1): {"with": ["with painted lips", "with rouged lips"],
                      "pred": ["has painted lips", "has rouged lips"]},
    ("lipstick", 0): {"with": ["with unpainted lips"], "pred": ["has unpainted lips"]},
    ("earrings", 1): {"with": ["with ear studs", "sporting ear studs"], "pred": ["has ear studs", "sports ear studs"]},
    ("earrings", 0): {"with": ["with unadorned ears"], "pred": ["has unadorned ears"]},
    ("skin_tone", 0): {"with": ["with a fair complexion", "with a porcelain complexion"],
                       "pred": ["has a fair complexion"]},
    ("skin_tone", 1): {"with": ["with an olive complexion"], "pred": ["has an olive complexion"]},
    ("skin_tone", 2): {"with": ["with an ebony complexion", "with a deep complexion"],
                       "pred": ["has a deep complexion"]},
}

_VOCAB = {
    "train": {
        "phrases": _TRAIN_PHRASES,
        "noun": {FEMALE: ["woman"], MALE: ["man"], None: ["person"]},
        "subject": "The person",
        "hair_color": [["black"], ["brown"], ["blond"], ["red"], ["grey"]],
        "hair_style": {1: ["short"], 2: ["long"]},
        "hair_noun": ["hair"],
        "color_beard_with": "with {a} {c} beard",
        "color_beard_pred": "has {a} {c} beard",
        "background": ["white", "blue", "green", "purple"],
        "background_with": ["on a {c} background", "in front of a {c} background"],
        "background_pred": ["is in front of a {c} background"],
        "forms": ["phrase", "has", "is", "picture"],
    },
    "heldout": {
        "phrases": _HELDOUT_PHRASES,
        "noun": {FEMALE: ["lady"], MALE: ["gentleman"], None: ["individual"]},
        "subject": "The individual",
        "hair_color": [["raven", "jet-black"], ["chestnut", "brunette"], ["golden", "flaxen"],
                       ["ginger", "auburn"], ["silver", "gray"]],
        "hair_style": {1: ["cropped", "close-cut"], 2: ["flowing", "shoulder-length"]},
        "hair_noun": ["hair", "locks"],
        "color_beard_with": "with {c} whiskers",
        "color_beard_pred": "sports {c} whiskers",
        "background": ["ivory", "azure", "emerald", "violet"],
        "background_with": ["against {a} {c} backdrop"],
        "background_pred": ["poses against {a} {c} backdrop"],
        "forms": ["portrait", "pictured", "who"],
    },
}
TEMPLATE_SETS = tuple(_VOCAB)

# How readily each attribute is chosen for a caption: salient positives often, negatives and
# background rarely (real captions describe what is there).
_WEIGHT_POSITIVE = {"gender": 2.0, "age": 1.5, "hair_color": 1.3, "hair_style": 1.2, "skin_tone": 0.5,
                    "background": 0.35}
_WEIGHT_BINARY = (0.35, 1.5)  # value 0, value 1


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def mentionable(attrs: dict[str, int]) -> list[str]:
    """Attributes a caption may state: known (>= 0), and not odd to state (a woman 'without a beard')."""
    out = []
    for name, value in attrs.items():
        if name not in ATTRIBUTES or value is None or value < 0:
            continue
        if name == "beard" and value == 0 and attrs.get("gender") == FEMALE:
            continue
        if name == "lipstick" and value == 0 and attrs.get("gender") == MALE:
            continue
        out.append(name)
    return out


def _choose(attrs: dict[str, int], rng: np.random.Generator, must: set[str], low: int, high: int) -> list[str]:
    names = [a for a in mentionable(attrs) if a not in must]
    weights = np.array([
        _WEIGHT_BINARY[attrs[a]] if len(ATTRIBUTES[a]) == 2 and a != "gender" else _WEIGHT_POSITIVE[a] for a in names
    ])
    k = int(rng.integers(low, high + 1)) - len(must)
    k = max(0, min(k, len(names)))
    chosen = list(rng.choice(len(names), size=k, replace=False, p=weights / weights.sum())) if k else []
    return sorted(must) + [names[j] for j in chosen]


def _realise(attrs: dict[str, int], chosen: list[str], rng: np.random.Generator, vocab: dict,
             color_beards: bool = True) -> tuple[dict, list[tuple[str, dict[str, str]]]]:
    """One 'fact' per chosen attribute (hair colour and style merged): its phrase in each role."""
    gender = attrs["gender"] if "gender" in chosen else None
    pos = {FEMALE: "her", MALE: "his", None: "their"}[gender]
    facts: list[tuple[str, dict[str, str]]] = []
    rest = [a for a in chosen if a != "gender"]

    hair_color = attrs["hair_color"] if "hair_color" in rest else None
    hair_style = attrs["hair_style"] if "hair_style" in rest else None
    bearded = "beard" in rest and attrs["beard"] == 1
    if color_beards and bearded and hair_color is not None and hair_style is None and rng.random() < 0.5:
        # "an old man with a grey beard": the renderer gives beards the hair colour.
        fill = {"c": _pick(rng, vocab["hair_color"][hair_color])}
        fill["a"] = _article(fill["c"])
        facts.append(("beard", {"with": vocab["color_beard_with"].format(**fill),
                                "pred": vocab["color_beard_pred"].format(**fill)}))
        rest = [a for a in rest if a not in ("beard", "hair_color")]
        hair_color = None
    if hair_style == BALD:
        hair_style = None  # bald is an adjective fact of its own; a bald head has no hair colour
    elif hair_color is not None or hair_style is not None:
        words = []
        if hair_color is not None:
            words.append(_pick(rng, vocab["hair_color"][hair_color]))
        if hair_style is not None:
            style = _pick(rng, vocab["hair_style"][hair_style])
            words.insert(0 if rng.random() < 0.7 else len(words), style)  # "long brown hair" / "brown long hair"
        hair = " ".join(words + [_pick(rng, vocab["hair_noun"])])
        facts.append(("hair", {"with": f"with {hair}", "pred": f"has {hair}"}))
        rest = [a for a in rest if a not in ("hair_color", "hair_style")]

    for name in rest:
        value = attrs[name]
        if name == "background":
            c = vocab["background"][value]
            fill = {"c": c, "a": _article(c)}
            facts.append((name, {"with": _pick(rng, vocab["background_with"]).format(**fill),
                                 "pred": _pick(rng, vocab["background_pred"]).format(**fill)}))
            continue
        roles = vocab["phrases"][(name, value)]
        facts.append((name, {role: _pick(rng, options).format(pos=pos) for role, options in roles.items()}))
    rng.shuffle(facts)
    return {"gender": gender, "pos": pos}, facts


def _noun_phrase(facts: list[tuple[str, dict]], gender: int | None, rng: np.random.Generator, vocab: dict,
                 max_adj: int = 2) -> tuple[str, list[tuple[str, dict]]]:
    """Determiner + up to `max_adj` adjectives + noun; returns it and the facts it did not use.

    Age goes first (training age words exist only as adjectives or predicates) and sits next
    to the noun: "a smiling old man".
    """
    adjs, rest = [], []
    for name, roles in sorted(facts, key=lambda f: f[0] != "age"):
        if "adj" in roles and len(adjs) < max_adj and (name == "age" or rng.random() < 0.6):
            adjs.insert(0, roles["adj"])
        else:
            rest.append((name, roles))
    rng.shuffle(rest)
    words = adjs + [_pick(rng, vocab["noun"][gender])]
    return f"{_article(words[0])} {' '.join(words)}", rest


def _with_list(facts: list[tuple[str, dict]]) -> str:
    """Post-noun phrases; the 'with' phrases share one 'with': "with a beard and dark skin, wearing a hat"."""
    items = [roles["with"] for _, roles in facts]
    withs = [p[5:] for p in items if p.startswith("with ")]
    # negatives last, so no positive phrase falls under a "without": "smiling and without earrings"
    others = [p for p in items if not p.startswith("with ")]
    others.sort(key=lambda p: p.startswith(("without", "not", "lacking")))
    if withs and len(withs) > 1 and others:  # "with red hair and a serious expression, wearing earrings"
        return f"with {_join(withs)}, {_join(others)}"
    return _join(([f"with {_join(withs)}"] if withs else []) + others)


def _sentences(first: str, later: str, facts: list[tuple[str, dict]], rng: np.random.Generator) -> list[str]:
    """Predicates grouped one or two per sentence; the first sentence names the subject."""
    out, preds = [], [roles["pred"] for _, roles in facts]
    while preds:
        take = 1 if len(preds) == 1 or rng.random() < 0.35 else 2
        out.append(f"{later if out else first} {_join(preds[:take])}.")
        preds = preds[take:]
    return out


def caption(attrs: dict[str, int], rng: np.random.Generator, template_set: str = "train",
            must_mention: tuple[str, ...] | set[str] = (), low: int = 2, high: int = 5,
            color_beards: bool = True) -> tuple[str, dict[str, int]]:
    """A caption mentioning `low`..`high` of the known attributes (plus all of `must_mention`).

    color_beards: allow "a grey beard" to state the hair colour (true of the toy faces, whose
    beards take the hair colour; not assumed for photographs).

    Returns (text, mentioned) where mentioned maps each attribute the text implies to its value.
    """
    if template_set not in _VOCAB:
        raise ValueError(f"template_set must be one of {TEMPLATE_SETS}, got {template_set!r}")
    vocab = _VOCAB[template_set]
    must = {m for m in must_mention if m in mentionable(attrs)}
    chosen = _choose(attrs, rng, must, low, high)
    mentioned = {a: int(attrs[a]) for a in chosen}
    ctx, facts = _realise(attrs, chosen, rng, vocab, color_beards)
    gender = ctx["gender"]
    pronoun = {FEMALE: "She", MALE: "He", None: None}[gender]
    form = _pick(rng, vocab["forms"])

    if form in ("phrase", "is", "picture", "portrait"):
        np_, rest = _noun_phrase(facts, gender, rng, vocab)
        tail = _with_list(rest)
        if form == "phrase":
            return f"{np_} {tail}".strip(), mentioned
        if form == "is":
            lead = "The person is" if gender is not None else "This is"
            return f"{lead} {np_} {tail}".strip() + ".", mentioned
        if form == "picture":
            return f"A picture of {np_} {tail}".strip() + ".", mentioned
        return f"Portrait of {np_}" + (f", {tail}." if tail else "."), mentioned

    later = pronoun or vocab["subject"]
    if form == "has":  # "This woman has brown long hair and wears eyeglasses. She is smiling."
        noun = _pick(rng, vocab["noun"][gender])
        sents = _sentences(f"This {noun}", later, facts, rng) or [f"This is {_article(noun)} {noun}."]
        return " ".join(sents), mentioned

    np_, rest = _noun_phrase(facts, gender, rng, vocab, max_adj=1)
    if form == "pictured":  # "Pictured here is a bespectacled lady. She sports a cap."
        return " ".join([f"Pictured here is {np_}."] + _sentences(later, later, rest, rng)), mentioned
    # "who": "Here we see a gentleman in his forties who grins and sports a cap."
    preds = [roles["pred"] for _, roles in rest]
    return (f"Here we see {np_} who {_join(preds)}." if preds else f"Here we see {np_}."), mentioned


def describe(attrs: dict[str, int]) -> str:
    """Every known attribute as 'name=class' (for logs and previews, not for training)."""
    return ", ".join(f"{k}={ATTRIBUTES[k][v]}" for k, v in attrs.items() if k in ATTRIBUTES and v >= 0)
