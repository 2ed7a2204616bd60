"""Synthetic data of both tasks: the embedded default data of `make demo` and of the tests.

Referring scenes with one expression each (`referring_examples`), parsing figures (`parsing_examples`) and
backbone-pretraining scenes (`pretraining_examples`): pure numpy + PIL, deterministic by seed, example i the same
whatever `count` is. The expression grammar, what an expression means, how each scene makes its expression refer
uniquely, and the parsing figures: docs/decisions.md#synthetic-data.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tf_recurrent_seg.defaults import ATR_CLASSES, ATR_LEFT_RIGHT_PAIRS, HORSE_COW_CLASSES

# ------------------------------------------------------------------------------------------------------------
# Referring: vocabulary of the grammar
# ------------------------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 210, 40),
    "purple": (145, 60, 190),
    "orange": (245, 135, 30),
}
SIZES = ("small", "big")
SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
LOCATIONS = ("left", "right", "top", "bottom")
LOCATION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
RELATIONS = ("left_of", "right_of", "above", "below")
RELATION_PHRASES = {
    "left_of": ("left of", "to the left of", "on the left side of"),
    "right_of": ("right of", "to the right of", "on the right side of"),
    "above": ("above",),
    "below": ("below",),
}
# Length buckets of the default mix (word counts, inclusive) and their weights.
DEFAULT_LENGTH_MIX: dict[str, float] = {"1-2": 0.25, "3-4": 0.25, "5-7": 0.25, "8-12": 0.25}
MIN_OBJECTS, MAX_OBJECTS = 3, 6

# Geometry, as fractions of the image size.
SMALL_RADIUS = (0.045, 0.06)
BIG_RADIUS = (0.09, 0.115)
OBJECT_GAP = 0.025  # least free space between two objects' circumcircles
RELATION_CONE = 1.5  # "left of" holds clearly within +-56 degrees (|dy| <= 1.5 |dx|) of straight left
LOCATION_MARGIN = 0.08  # "on the left": the runner-up's centre is at least this much further right

OPTIONAL_PARTS = ("size", "colour", "location", "relation", "landmark.size", "landmark.colour")


@dataclasses.dataclass(frozen=True)
class Description:
    """The parts of a referring expression (a noun phrase of the grammar), meaning and surface form.

    Meaning: `shape` (always), `colour`, `size`, `location` (one of LOCATIONS) or `relation` (one of RELATIONS)
    with a `landmark` Description (no location or relation of its own). Surface: `article` ("the" first),
    `size_word` (a synonym of the size), `location_form` ("phrase": "on the left"; "adjective": "the left
    circle"), `relation_words` (one of RELATION_PHRASES[relation]).
    """

    shape: str
    colour: str | None = None
    size: str | None = None
    location: str | None = None
    relation: str | None = None
    landmark: Description | None = None
    article: bool = True
    size_word: str | None = None
    location_form: str = "phrase"
    relation_words: str | None = None

    def __post_init__(self):
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; known: {SHAPES}")
        if self.colour is not None and self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; known: {tuple(COLOURS)}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; known: {SIZES}")
        if self.size_word is not None and (self.size is None or self.size_word not in SIZE_WORDS[self.size]):
            raise ValueError(f"size word {self.size_word!r} does not say size {self.size!r}")
        if self.location is not None and self.location not in LOCATIONS:
            raise ValueError(f"unknown location {self.location!r}; known: {LOCATIONS}")
        if self.location_form not in ("phrase", "adjective"):
            raise ValueError(f"location_form must be 'phrase' or 'adjective', got {self.location_form!r}")
        if (self.relation is None) != (self.landmark is None):
            raise ValueError("a relation needs a landmark and a landmark needs a relation")
        if self.relation is not None:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; known: {RELATIONS}")
            if self.location is not None:
                raise ValueError("an expression has a location or a relation, not both")
            if self.landmark.relation is not None or self.landmark.location is not None:
                raise ValueError("a landmark has no location or relation of its own")
            if self.relation_words is not None and self.relation_words not in RELATION_PHRASES[self.relation]:
                raise ValueError(f"{self.relation_words!r} does not say relation {self.relation!r}")

    def words(self) -> list[str]:
        """The expression's words (exactly what `text.tokenize` gives for `text()`)."""
        words = ["the"] if self.article else []
        if self.location is not None and self.location_form == "adjective":
            words.append(self.location)
        if self.size is not None:
            words.append(self.size_word or self.size)
        if self.colour is not None:
            words.append(self.colour)
        words.append(self.shape)
        if self.location is not None and self.location_form == "phrase":
            words.extend(LOCATION_PHRASES[self.location].split())
        if self.relation is not None:
            words.extend((self.relation_words or RELATION_PHRASES[self.relation][0]).split())
            words.extend(self.landmark.words())
        return words

    def text(self) -> str:
        return " ".join(self.words())

    def optional_parts(self) -> tuple[str, ...]:
        """The parts (names of OPTIONAL_PARTS) this description has."""
        present = {
            "size": self.size is not None,
            "colour": self.colour is not None,
            "location": self.location is not None,
            "relation": self.relation is not None,
            "landmark.size": self.landmark is not None and self.landmark.size is not None,
            "landmark.colour": self.landmark is not None and self.landmark.colour is not None,
        }
        return tuple(name for name in OPTIONAL_PARTS if present[name])

    def without(self, part: str) -> Description:
        """This description with one optional part dropped (the relation drops its landmark too)."""
        if part == "size":
            return dataclasses.replace(self, size=None, size_word=None)
        if part == "colour":
            return dataclasses.replace(self, colour=None)
        if part == "location":
            return dataclasses.replace(self, location=None, location_form="phrase")
        if part == "relation":
            return dataclasses.replace(self, relation=None, landmark=None, relation_words=None)
        if part.startswith("landmark.") and self.landmark is not None:
            return dataclasses.replace(self, landmark=self.landmark.without(part.split(".", 1)[1]))
        raise ValueError(f"unknown part {part!r}; known: {OPTIONAL_PARTS}")


# Seed stream per split: the examples of a split come from default_rng([seed, stream, index]). "pretrain" holds
# the backbone-pretraining scenes (`pretraining_examples`), disjoint from the referring and parsing splits.
SPLIT_STREAMS = {"train": 0, "test": 1, "validation": 2, "pretrain": 3}


def parse_expression(expression: str) -> Description:
    """Parses an expression of the grammar back into its Description (inverse of `Description.text`).

    Raises:
        ValueError: the expression is not in the grammar.
    """
    words = expression.split()
    description, rest = _parse_noun_phrase(words, expression, allow_location=True)
    if rest:
        raise ValueError(f"{expression!r} is not in the grammar: unexpected words {rest}")
    return description


def _parse_noun_phrase(words: list[str], expression: str, allow_location: bool) -> tuple[Description, list[str]]:
    fields: dict[str, Any] = {"article": False}
    i = 0
    if i < len(words) and words[i] == "the":
        fields["article"], i = True, i + 1
    if allow_location and i < len(words) and words[i] in LOCATIONS:
        fields["location"], fields["location_form"], i = words[i], "adjective", i + 1
    for size, synonyms in SIZE_WORDS.items():
        if i < len(words) and words[i] in synonyms:
            fields["size"], fields["size_word"], i = size, words[i], i + 1
            break
    if i < len(words) and words[i] in COLOURS:
        fields["colour"], i = words[i], i + 1
    if i >= len(words) or words[i] not in SHAPES:
        raise ValueError(f"{expression!r} is not in the grammar: expected a shape at word {i + 1}")
    fields["shape"], i = words[i], i + 1
    rest = words[i:]
    if allow_location and "location" not in fields:
        # Relations first: "on the left side of" starts like the location "on the left".
        for relation, phrases in RELATION_PHRASES.items():
            for phrase in sorted(phrases, key=lambda p: -len(p.split())):
                if rest[: len(phrase.split())] == phrase.split():
                    landmark, rest = _parse_noun_phrase(rest[len(phrase.split()) :], expression, allow_location=False)
                    fields.update(relation=relation, relation_words=phrase, landmark=landmark)
                    return Description(**fields), rest
        for location, phrase in LOCATION_PHRASES.items():
            if rest[: len(phrase.split())] == phrase.split():
                fields["location"], rest = location, rest[len(phrase.split()) :]
                return Description(**fields), rest
    return Description(**fields), rest


# ------------------------------------------------------------------------------------------------------------
# Referring: scene objects and the meaning of an expression
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SceneObject:
    """One object of a referring scene: attributes, position (centre x, y and circumradius in pixels), its
    drawn colour, its role in the scene and its exact pixel mask (`mask(image_size)`)."""

    shape: str
    colour: str
    size: str
    x: float = 0.0
    y: float = 0.0
    radius: float = 0.0
    role: str = "filler"  # target, distractor, twin, landmark, landmark_distractor, filler
    rgb: tuple[int, int, int] = (0, 0, 0)
    mask_crop: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)
    crop_origin: tuple[int, int] = (0, 0)  # (top, left) of mask_crop in the image

    def mask(self, image_size: int) -> np.ndarray:
        """(S, S) uint8 0/1: the object's drawn pixels."""
        if self.mask_crop is None:
            raise ValueError("the object has not been drawn")
        full = np.zeros((image_size, image_size), np.uint8)
        top, left = self.crop_origin
        height, width = self.mask_crop.shape
        full[top : top + height, left : left + width] = self.mask_crop
        return full


def _matches(obj: SceneObject, description: Description) -> bool:
    return (
        obj.shape == description.shape
        and (description.colour is None or obj.colour == description.colour)
        and (description.size is None or obj.size == description.size)
    )


def _relation_value(obj: SceneObject, landmark: SceneObject, relation: str) -> bool | None:
    """True (clearly holds), False (clearly does not) or None (vague) for `obj <relation> landmark`."""
    dx, dy = obj.x - landmark.x, obj.y - landmark.y
    if relation in ("left_of", "right_of"):
        ahead, across = (-dx if relation == "left_of" else dx), abs(dy)
    else:
        ahead, across = (-dy if relation == "above" else dy), abs(dx)
    if ahead >= landmark.radius + 0.5 * obj.radius and across <= RELATION_CONE * ahead:
        return True
    if ahead <= 0:
        return False
    return None


def referents(objects: Sequence[SceneObject], description: Description, image_size: int) -> tuple[list[int], list[int]]:
    """Which objects the description may denote: (sure, vague) index lists (the rules:
    docs/decisions.md#synthetic-data, "Meaning").

    `sure` holds the objects it clearly denotes, `vague` those it might denote (a relation or location whose
    truth is unclear, or a landmark that is not unique). It refers uniquely iff sure has one and vague none.
    """
    candidates = [i for i, obj in enumerate(objects) if _matches(obj, description)]
    sure, vague = list(candidates), []
    if description.relation is not None:
        landmark_sure, landmark_vague = referents(objects, description.landmark, image_size)
        landmarks = landmark_sure + landmark_vague
        sure, vague = [], []
        for i in candidates:
            values = [_relation_value(objects[i], objects[j], description.relation) for j in landmarks if j != i]
            if len(landmarks) == 1 and landmark_sure and values == [True]:
                sure.append(i)
            elif any(value is not False for value in values):
                vague.append(i)
    if description.location is not None and len(sure) + len(vague) > 1:
        pool = sure + vague
        sign, axis = {"left": (1, "x"), "right": (-1, "x"), "top": (1, "y"), "bottom": (-1, "y")}[description.location]
        keys = {i: sign * getattr(objects[i], axis) for i in pool}
        best = min(pool, key=keys.get)
        close = [i for i in pool if keys[i] - keys[best] < LOCATION_MARGIN * image_size]
        if close == [best] and best in sure:
            sure, vague = [best], []
        else:
            sure, vague = [], sorted(close)
    return sure, vague


def referent(objects: Sequence[SceneObject], description: Description, image_size: int) -> int | None:
    """The index of the one object the description clearly and uniquely denotes, else None."""
    sure, vague = referents(objects, description, image_size)
    return sure[0] if len(sure) == 1 and not vague else None


def refers_uniquely(objects: Sequence[SceneObject], expression_parts: Description | str, image_size: int = 320) -> bool:
    """Whether the expression (a Description or a string of the grammar) denotes exactly one object."""
    if isinstance(expression_parts, str):
        expression_parts = parse_expression(expression_parts)
    return referent(objects, expression_parts, image_size) is not None


def needed_parts(objects: Sequence[SceneObject], description: Description, image_size: int = 320) -> dict[str, bool]:
    """For each optional part of the description: whether dropping it loses the target (the shorter expression
    no longer refers uniquely, or refers to another object)."""
    target = referent(objects, description, image_size)
    return {
        part: target is None or referent(objects, description.without(part), image_size) != target
        for part in description.optional_parts()
    }


# ------------------------------------------------------------------------------------------------------------
# Referring: expression forms, length mix
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Form:
    article: bool
    attributes: tuple[str, ...]  # subset of ("size", "colour")
    location_form: str | None  # None, "phrase", "adjective"
    relation_form: str | None  # None, "vertical" (1 word), "h2", "h4", "h5" (words of the phrase)
    landmark_attributes: tuple[str, ...]

    @property
    def num_words(self) -> int:
        words = int(self.article) + len(self.attributes) + 1
        words += {None: 0, "phrase": 3, "adjective": 1}[self.location_form]
        if self.relation_form is not None:
            words += {"vertical": 1, "h2": 2, "h4": 4, "h5": 5}[self.relation_form]
            words += 2 + len(self.landmark_attributes)
        return words

    @property
    def num_objects(self) -> int:
        """Objects the form needs for every part to matter: target, distractors, twin, landmark and its own."""
        count = 1 + len(self.attributes)
        if self.location_form is not None or self.relation_form is not None:
            count += 1
        if self.relation_form is not None:
            count += 1 + len(self.landmark_attributes)
        return count


@functools.lru_cache(maxsize=None)
def _all_forms(max_objects: int) -> tuple[_Form, ...]:
    attribute_sets = [(), ("size",), ("colour",), ("size", "colour")]
    forms = []
    for article, attributes in itertools.product((False, True), attribute_sets):
        for location_form in (None, "phrase", "adjective"):
            forms.append(_Form(article, attributes, location_form, None, ()))
        for relation_form, landmark_attributes in itertools.product(("vertical", "h2", "h4", "h5"), attribute_sets):
            forms.append(_Form(article, attributes, None, relation_form, landmark_attributes))
    return tuple(form for form in forms if form.num_objects <= max_objects)


def parse_length_mix(length_mix: Mapping[Any, float] | None) -> list[tuple[int, int, float]]:
    """Normalises a length mix to [(min_words, max_words, probability)].

    Keys are "lo-hi" strings, single-count strings/ints, or (lo, hi) tuples; values are non-negative
    weights. None gives DEFAULT_LENGTH_MIX (equal weights on 1-2, 3-4, 5-7 and 8-12 words).
    """
    length_mix = DEFAULT_LENGTH_MIX if length_mix is None else length_mix
    buckets = []
    for key, weight in length_mix.items():
        if isinstance(key, str):
            low, _, high = key.partition("-")
            low, high = int(low), int(high or low)
        elif isinstance(key, (tuple, list)):
            low, high = (int(v) for v in key)
        else:
            low = high = int(key)
        if not 1 <= low <= high or weight < 0:
            raise ValueError(f"bad length bucket {key!r}: {weight!r}")
        buckets.append((low, high, float(weight)))
    total = sum(weight for _, _, weight in buckets)
    if total <= 0:
        raise ValueError(f"length mix {length_mix!r} has no positive weight")
    return [(low, high, weight / total) for low, high, weight in buckets]


def _forms_by_bucket(length_mix, max_objects: int) -> tuple[list[list[_Form]], np.ndarray]:
    forms = _all_forms(max_objects)
    buckets = parse_length_mix(length_mix)
    grouped = []
    for low, high, weight in buckets:
        in_bucket = [form for form in forms if low <= form.num_words <= high]
        if not in_bucket and weight > 0:
            lengths = sorted({form.num_words for form in forms})
            raise ValueError(
                f"no expression of {low}-{high} words with at most {max_objects} objects; possible lengths {lengths}"
            )
        grouped.append(in_bucket)
    return grouped, np.array([weight for _, _, weight in buckets])


def _description_for_form(rng: np.random.Generator, form: _Form) -> Description:
    shape = str(rng.choice(SHAPES))
    fields: dict[str, Any] = {"shape": shape, "article": form.article}
    if "size" in form.attributes:
        fields["size"] = str(rng.choice(SIZES))
        fields["size_word"] = str(rng.choice(SIZE_WORDS[fields["size"]]))
    if "colour" in form.attributes:
        fields["colour"] = str(rng.choice(list(COLOURS)))
    if form.location_form is not None:
        fields["location"], fields["location_form"] = str(rng.choice(LOCATIONS)), form.location_form
    if form.relation_form is not None:
        relation = str(rng.choice(("above", "below") if form.relation_form == "vertical" else ("left_of", "right_of")))
        phrases = RELATION_PHRASES[relation]
        words = {"vertical": 1, "h2": 2, "h4": 4, "h5": 5}[form.relation_form]
        landmark: dict[str, Any] = {"shape": str(rng.choice([s for s in SHAPES if s != shape])), "article": True}
        if "size" in form.landmark_attributes:
            landmark["size"] = str(rng.choice(SIZES))
            landmark["size_word"] = str(rng.choice(SIZE_WORDS[landmark["size"]]))
        if "colour" in form.landmark_attributes:
            landmark["colour"] = str(rng.choice(list(COLOURS)))
        fields.update(
            relation=relation,
            relation_words=next(p for p in phrases if len(p.split()) == words),
            landmark=Description(**landmark),
        )
    return Description(**fields)


def sample_description(
    rng: np.random.Generator, length_mix: Mapping[Any, float] | None = None, max_objects: int = MAX_OBJECTS
) -> Description:
    """Draws an expression: a length bucket from the mix, a form of that length (uniformly), then its words."""
    grouped, weights = _forms_by_bucket(length_mix, max_objects)
    bucket = int(rng.choice(len(grouped), p=weights))
    form = grouped[bucket][int(rng.integers(len(grouped[bucket])))]
    return _description_for_form(rng, form)


# ------------------------------------------------------------------------------------------------------------
# Referring: scene construction and drawing
# ------------------------------------------------------------------------------------------------------------


class PlacementError(ValueError):
    """No object positions satisfying the expression were found in the allowed attempts."""


def _other(rng: np.random.Generator, values: Sequence[str], value: str) -> str:
    return str(rng.choice([v for v in values if v != value]))


def _scene_objects(
    rng: np.random.Generator, description: Description, num_objects: int | None, max_objects: int
) -> list[SceneObject]:
    """The objects (attributes and roles; no positions) of a scene built for `description`; [0] is the target."""
    target = SceneObject(
        description.shape,
        description.colour or str(rng.choice(list(COLOURS))),
        description.size or str(rng.choice(SIZES)),
        role="target",
    )
    objects = [target]
    if description.size is not None:
        objects.append(dataclasses.replace(target, size=_other(rng, SIZES, target.size), role="distractor"))
    if description.colour is not None:
        objects.append(dataclasses.replace(target, colour=_other(rng, list(COLOURS), target.colour), role="distractor"))
    if description.location is not None or description.relation is not None:
        objects.append(dataclasses.replace(target, role="twin"))
    head_shapes = {target.shape}
    if description.relation is not None:
        spec = description.landmark
        colour, size = spec.colour or str(rng.choice(list(COLOURS))), spec.size or str(rng.choice(SIZES))
        landmark = SceneObject(spec.shape, colour, size, role="landmark")
        objects.append(landmark)
        head_shapes.add(landmark.shape)
        if spec.size is not None:
            size = _other(rng, SIZES, landmark.size)
            objects.append(dataclasses.replace(landmark, size=size, role="landmark_distractor"))
        if spec.colour is not None:
            colour = _other(rng, list(COLOURS), landmark.colour)
            objects.append(dataclasses.replace(landmark, colour=colour, role="landmark_distractor"))
    if len(objects) > max_objects:
        raise ValueError(f"{description.text()!r} needs {len(objects)} objects, more than max_objects={max_objects}")
    if num_objects is None:
        num_objects = int(rng.integers(max(MIN_OBJECTS, len(objects)), max_objects + 1))
    free_shapes = [s for s in SHAPES if s not in head_shapes]
    for k in range(max(0, num_objects - len(objects))):
        # The first filler shares everything but the shape with the target; later ones vary colour and size too.
        shape = str(rng.choice(free_shapes))
        if k == 0:
            objects.append(dataclasses.replace(target, shape=shape, role="filler"))
        else:
            objects.append(SceneObject(shape, str(rng.choice(list(COLOURS))), str(rng.choice(SIZES)), role="filler"))
    return objects


def _place(rng: np.random.Generator, objects: list[SceneObject], size: int, tries: int = 200) -> bool:
    """Draws non-overlapping radii and centres for all objects (in place); False if they do not fit."""
    gap = OBJECT_GAP * size
    for obj in objects:
        low, high = SMALL_RADIUS if obj.size == "small" else BIG_RADIUS
        obj.radius = float(rng.uniform(low, high) * size)
    order = sorted(range(len(objects)), key=lambda i: -objects[i].radius)  # big ones first
    placed: list[SceneObject] = []
    for i in order:
        obj = objects[i]
        border = obj.radius + 2
        for _ in range(tries):
            x, y = rng.uniform(border, size - border, size=2)
            if all((x - o.x) ** 2 + (y - o.y) ** 2 >= (obj.radius + o.radius + gap) ** 2 for o in placed):
                obj.x, obj.y = float(x), float(y)
                placed.append(obj)
                break
        else:
            return False
    return True


def _shape_polygon(shape: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a shape inscribed in the circle (x, y, r), image coordinates (y down)."""
    if shape == "square":
        h = 0.8 * r
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "triangle":
        cy = y + 0.15 * r  # the centroid sits below the circumcentre: shift for a centred look
        angles = (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)
        return [(x + 0.95 * r * math.cos(a), cy - 0.95 * r * math.sin(a)) for a in angles]
    if shape == "diamond":
        return [(x, y - r), (x + 0.7 * r, y), (x, y + r), (x - 0.7 * r, y)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else 0.42 * r
            angle = math.pi / 2 + k * math.pi / 5
            points.append((x + radius * math.cos(angle), y - radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, w = 0.9 * r, 0.32 * r
        return [
            (x - w, y - a),
            (x + w, y - a),
            (x + w, y - w),
            (x + a, y - w),
            (x + a, y + w),
            (x + w, y + w),
            (x + w, y + a),
            (x - w, y + a),
            (x - w, y + w),
            (x - a, y + w),
            (x - a, y - w),
            (x - w, y - w),
        ]
    raise ValueError(f"no polygon for shape {shape!r}")


def _draw_object_mask(obj: SceneObject, size: int) -> None:
    """Rasterises the object into obj.mask_crop (no anti-aliasing, so the mask is exactly what is painted)."""
    top, left = max(0, int(math.floor(obj.y - obj.radius)) - 1), max(0, int(math.floor(obj.x - obj.radius)) - 1)
    bottom, right = min(size, int(math.ceil(obj.y + obj.radius)) + 2), min(size, int(math.ceil(obj.x + obj.radius)) + 2)
    canvas = Image.new("L", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(canvas)
    x, y = obj.x - left, obj.y - top
    if obj.shape == "circle":
        draw.ellipse([x - obj.radius, y - obj.radius, x + obj.radius, y + obj.radius], fill=1)
    else:
        draw.polygon(_shape_polygon(obj.shape, x, y, obj.radius), fill=1)
    obj.mask_crop = np.asarray(canvas, dtype=np.uint8).copy()
    obj.crop_origin = (top, left)


def _smooth_field(rng: np.random.Generator, size: int | tuple[int, int], cells: int, amplitude: float) -> np.ndarray:
    """(S, S) or (H, W) float32 low-frequency noise in [-amplitude, amplitude] (a random grid upsampled
    bilinearly); `size` is a side S or (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    grid = rng.uniform(-amplitude, amplitude, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(S, S, 3) float32: a low-saturation vertical gradient with smooth texture."""
    top = (rng.uniform(85, 175) + rng.uniform(-12, 12, size=3)).astype(np.float32)
    bottom = (rng.uniform(85, 175) + rng.uniform(-12, 12, size=3)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    return top * (1 - ramp) + bottom * ramp + _smooth_field(rng, size, 6, 14.0)[..., None]


def _finish(image: np.ndarray, rng: np.random.Generator, noise: int) -> np.ndarray:
    """Rounds a float image to uint8, adding uniform integer noise in [-noise, noise] first."""
    out = np.rint(image).astype(np.int16)
    if noise > 0:
        out += rng.integers(-noise, noise + 1, size=image.shape, dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def referring_scene(
    rng: np.random.Generator,
    size: int = 320,
    *,
    parts: Description | None = None,
    length_mix: Mapping[Any, float] | None = None,
    num_objects: int | None = None,
    max_objects: int = MAX_OBJECTS,
    noise: int = 0,
    max_attempts: int = 500,
) -> tuple[np.ndarray, list[SceneObject]]:
    """Draws a scene in which `parts` (drawn from `length_mix` when None) refers to objects[0] only: the objects are
    chosen for the expression (target, distractors, twin, landmark, fillers), then placed until the expression
    refers uniquely with every optional part needed (docs/decisions.md#synthetic-data).

    Args:
        rng: the random generator (the only source of randomness).
        size: image side S.
        parts: the expression the scene is built for; its target object is objects[0].
        length_mix: the length mix used to draw `parts` when it is None.
        num_objects: objects in the scene (default: random in [max(3, needed), max_objects]).
        max_objects: most objects in a scene (6).
        noise: amplitude of the uniform per-pixel noise added to the whole image (0: none; noise makes PNGs
            several times larger).
        max_attempts: position draws before giving up (PlacementError, a ValueError).

    Returns:
        image (S, S, 3) uint8 and the objects (SceneObject, with attributes, position, role and mask).
        Objects never overlap; `refers_uniquely(objects, parts, size)` holds and every optional part of
        `parts` is needed (`needed_parts`).
    """
    if parts is None:
        parts = sample_description(rng, length_mix, max_objects)
    objects = _scene_objects(rng, parts, num_objects, max_objects)
    for _ in range(max_attempts):
        if not _place(rng, objects, size):
            continue
        if referent(objects, parts, size) == 0 and all(needed_parts(objects, parts, size).values()):
            break
    else:
        raise PlacementError(f"could not place a scene for {parts.text()!r} in {max_attempts} attempts")
    image = _background(rng, size)
    for obj in objects:
        obj.rgb = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[obj.colour])
        _draw_object_mask(obj, size)
        top, left = obj.crop_origin
        height, width = obj.mask_crop.shape
        image[top : top + height, left : left + width][obj.mask_crop.astype(bool)] = obj.rgb
    return _finish(image, rng, noise), objects


def _example_rng(seed: int | Sequence[int], index: int) -> np.random.Generator:
    seed = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    return np.random.default_rng([*seed, int(index)])


def referring_examples(
    seed: int | Sequence[int],
    count: int,
    image_size: int = 320,
    length_mix: Mapping[Any, float] | None = None,
    *,
    start: int = 0,
    max_objects: int = MAX_OBJECTS,
    noise: int = 0,
    id_offset: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yields `count` referring examples (one expression per scene), examples start..start+count-1.

    Args:
        seed: an int or a sequence of ints (e.g. (seed, split)); example i uses default_rng([*seed, i]).
        count: number of examples.
        image_size: image side S (320 as in the RMI paper).
        length_mix: weights over word-count buckets, e.g. {"1-2": 1, "3-4": 1, "5-7": 1, "8-12": 1}
            (the default); keys "lo-hi", "n" or (lo, hi).
        start: index of the first example (ref_id and sent_id are id_offset + the example index).
        max_objects: most objects per scene.
        noise: per-pixel noise amplitude (0: none).
        id_offset: added to ref_id and sent_id (keeps the ids of two splits apart).

    Yields:
        dicts with image (S, S, 3) uint8, mask (S, S) uint8 0/1 (the target's exact pixels), expression
        (str), ref_id, sent_id (int), and for checks: parts (Description), objects (list of SceneObject)
        and target (index into objects, always 0).
    """
    _forms_by_bucket(length_mix, max_objects)  # validates the mix before the first example
    for index in range(start, start + count):
        rng = _example_rng(seed, index)
        while True:  # a scene that cannot be placed (very rare) is replaced by another draw of the same rng
            parts = sample_description(rng, length_mix, max_objects)
            try:
                image, objects = referring_scene(rng, image_size, parts=parts, max_objects=max_objects, noise=noise)
                break
            except PlacementError:
                continue
        yield {
            "image": image,
            "mask": objects[0].mask(image_size),
            "expression": parts.text(),
            "ref_id": id_offset + index,
            "sent_id": id_offset + index,
            "parts": parts,
            "objects": objects,
            "target": 0,
        }


# ------------------------------------------------------------------------------------------------------------
# Backbone pretraining: per-pixel attributes of every object (the synthetic stand-in for ImageNet / PASCAL)
# ------------------------------------------------------------------------------------------------------------

# Per-pixel label maps of a pretraining scene: 0 is background, k + 1 the k-th value of the attribute.
PRETRAINING_ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES}


def pretraining_examples(
    seed: int | Sequence[int], count: int, image_size: int = 128, *, start: int = 0
) -> Iterator[dict[str, Any]]:
    """Yields `count` pretraining scenes {image (S, S, 3) uint8, shape, colour, size (S, S) uint8, index}.

    The scenes are drawn like referring scenes (3-6 shapes on a textured background) but carry no expression
    and no target: each label map gives every object pixel its attribute (`PRETRAINING_ATTRIBUTES`, 0 for
    background). Draw them from their own seed stream, `(seed, SPLIT_STREAMS["pretrain"])`, so that a
    pretrained backbone never sees a referring or parsing scene.
    """
    for index in range(start, start + count):
        rng = _example_rng(seed, index)
        while True:
            try:
                image, objects = referring_scene(rng, image_size)
                break
            except PlacementError:
                continue
        labels = {name: np.zeros((image_size, image_size), np.uint8) for name in PRETRAINING_ATTRIBUTES}
        for obj in objects:
            pixels = obj.mask(image_size).astype(bool)
            for name, values in PRETRAINING_ATTRIBUTES.items():
                labels[name][pixels] = values.index(getattr(obj, name)) + 1
        yield {"image": image, **labels, "index": index}


# ------------------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------------------

ANIMAL_CLASSES: tuple[str, ...] = tuple(HORSE_COW_CLASSES)  # background, head, body, leg, tail
PERSON_CLASSES: tuple[str, ...] = ("background", "head", "torso", "left-arm", "right-arm", "left-leg", "right-leg")
HUMAN_CLASSES: tuple[str, ...] = tuple(ATR_CLASSES)  # the stand-in for ATR: its 18 classes, in its id order
PARSING_CLASSES = {"animal": ANIMAL_CLASSES, "person": PERSON_CLASSES, "human": HUMAN_CLASSES}
# Ids a horizontal flip must swap (the person's left arm becomes the right one).
PERSON_LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = (
    (PERSON_CLASSES.index("left-arm"), PERSON_CLASSES.index("right-arm")),
    (PERSON_CLASSES.index("left-leg"), PERSON_CLASSES.index("right-leg")),
)
HUMAN_LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (HUMAN_CLASSES.index(f"left-{part}"), HUMAN_CLASSES.index(f"right-{part}")) for part in ("shoe", "leg", "arm")
)
assert HUMAN_LEFT_RIGHT_PAIRS == tuple(ATR_LEFT_RIGHT_PAIRS)
PARSING_KINDS = ("animal", "person", "human")
# Default image (height, width) per kind: 321 x 321 as the LG-LSTM paper's Horse-Cow setting; 150 x 100 as the
# Co-CNN's ATR input (a standing figure is taller than wide).
PARSING_IMAGE_SHAPES: dict[str, tuple[int, int]] = {"animal": (321, 321), "person": (321, 321), "human": (150, 100)}


def parsing_class_names(kind: str) -> tuple[str, ...]:
    """The class names of a parsing kind, in id order."""
    if kind not in PARSING_CLASSES:
        raise ValueError(f"kind must be one of {PARSING_KINDS}, got {kind!r}")
    return PARSING_CLASSES[kind]


def left_right_pairs(kind: str = "person") -> tuple[tuple[int, int], ...]:
    """Class id pairs a horizontal flip must swap: the person's arms and legs, the human's shoes, legs and arms
    (ATR's pairs); none for the animal."""
    parsing_class_names(kind)
    return {"animal": (), "person": PERSON_LEFT_RIGHT_PAIRS, "human": HUMAN_LEFT_RIGHT_PAIRS}[kind]


def _image_shape(image_size: int | Sequence[int] | None, kind: str) -> tuple[int, int]:
    """(height, width) from an int side, a (height, width) pair, or None (the kind's default)."""
    if image_size is None:
        return PARSING_IMAGE_SHAPES[kind]
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = (int(v) for v in image_size)
    return height, width


class _Figure:
    """Parts in drawing order (later ones in front): (class id, shade index, polygons/ellipses)."""

    def __init__(self):
        self.pieces: list[tuple[int, int, str, list[tuple[float, float]]]] = []

    def polygon(self, class_id: int, shade: int, points) -> None:
        self.pieces.append((class_id, shade, "polygon", [tuple(map(float, p)) for p in points]))

    def ellipse(self, class_id: int, shade: int, centre, a: float, b: float, angle: float = 0.0, n: int = 28) -> None:
        """An ellipse with semi-axes a (along `angle`, radians) and b, as a polygon."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        ca, sa = math.cos(angle), math.sin(angle)
        xs, ys = a * np.cos(t), b * np.sin(t)
        self.polygon(class_id, shade, np.stack([centre[0] + xs * ca - ys * sa, centre[1] + xs * sa + ys * ca], 1))

    def limb(self, class_id: int, shade: int, start, end, w0: float, w1: float) -> None:
        """A tapered segment from start (half-width w0) to end (w1), with a round joint at the start."""
        start, end = np.asarray(start, float), np.asarray(end, float)
        d = end - start
        normal = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6)
        self.polygon(class_id, shade, [start + w0 * normal, end + w1 * normal, end - w1 * normal, start - w0 * normal])
        self.ellipse(class_id, shade, start, w0, w0, n=16)

    def points(self) -> np.ndarray:
        return np.concatenate([np.asarray(p) for *_, p in self.pieces])

    def transform(self, scale: float, offset, mirror: bool = False) -> None:
        sx = -scale if mirror else scale
        self.pieces = [
            (c, s, kind, [(x * sx + offset[0], y * scale + offset[1]) for x, y in pts])
            for c, s, kind, pts in self.pieces
        ]


def _direction(angle_from_down: float, outward: float = 1.0) -> np.ndarray:
    """Unit vector (image coordinates, y down) at `angle_from_down` radians from straight down, turning
    towards +x (outward=1) or -x (outward=-1)."""
    return np.array([outward * math.sin(angle_from_down), math.cos(angle_from_down)])


def _animal_figure(rng: np.random.Generator) -> _Figure:
    """A four-legged animal facing +x, body length 1, body centre at the origin."""
    head, body, leg, tail = (ANIMAL_CLASSES.index(n) for n in ("head", "body", "leg", "tail"))
    figure = _Figure()
    deg = math.radians
    half_height = rng.uniform(0.16, 0.24)
    tilt = deg(rng.uniform(-6, 6))
    leg_length = rng.uniform(0.42, 0.62)

    def body_point(u, v):  # (u, v) in body-ellipse units, rotated by the tilt
        x, y = 0.5 * u, half_height * v
        return np.array([x * math.cos(tilt) - y * math.sin(tilt), x * math.sin(tilt) + y * math.cos(tilt)])

    def add_leg(base, shade):
        upper = deg(rng.uniform(-28, 28))
        lower = upper + deg(rng.uniform(-30, 25))
        knee = base + _direction(upper) * leg_length * 0.5
        foot = knee + _direction(lower) * leg_length * 0.5
        figure.limb(leg, shade, base, knee, 0.065, 0.045)
        figure.limb(leg, shade, knee, foot, 0.045, 0.038)
        figure.ellipse(leg, shade, foot + np.array([0.012, 0.0]), 0.045, 0.028)  # hoof

    front, back = rng.uniform(0.5, 0.7), -rng.uniform(0.5, 0.7)
    # Far-side legs first (behind the body, a darker shade), a little apart from the near ones.
    for u in (front + 0.08, back + 0.08):
        add_leg(body_point(u, 0.45), shade=1)
    # Tail: from the top of the rump, hanging backwards; same coat as the legs.
    tail_base = body_point(-0.97, -0.35)
    tail_mid = tail_base + _direction(deg(rng.uniform(25, 75)), -1) * rng.uniform(0.14, 0.22)
    tail_end = tail_mid + _direction(deg(rng.uniform(5, 40)), -1) * rng.uniform(0.12, 0.22)
    figure.limb(tail, 0, tail_base, tail_mid, 0.03, 0.024)
    figure.limb(tail, 0, tail_mid, tail_end, 0.024, 0.016)
    figure.ellipse(body, 0, (0.0, 0.0), 0.5, half_height, tilt, n=40)
    # Neck (a body part, as in Horse-Cow) and head.
    grazing = rng.random() < 0.25
    neck_angle = deg(rng.uniform(-75, -40) if grazing else rng.uniform(25, 70))  # above the horizontal
    neck_base = body_point(0.78, -0.25)
    neck_top = neck_base + np.array([math.cos(neck_angle), -math.sin(neck_angle)]) * rng.uniform(0.25, 0.38)
    figure.limb(body, 0, neck_base, neck_top, 0.09, 0.06)
    head_angle = deg(rng.uniform(55, 95) if grazing else rng.uniform(15, 60))  # below the horizontal
    head_axis = np.array([math.cos(head_angle), math.sin(head_angle)])
    head_a, head_b = rng.uniform(0.13, 0.17), rng.uniform(0.055, 0.075)
    figure.ellipse(head, 0, neck_top + head_axis * head_a * 0.65, head_a, head_b, head_angle)
    ear_base = neck_top - head_axis * 0.02
    back_dir = np.array([-head_axis[1], head_axis[0]]) * -1  # perpendicular, pointing up/back
    ear_tip = ear_base + back_dir * 0.07 - head_axis * 0.03
    figure.polygon(head, 0, [ear_base + np.array([-0.02, 0.0]), ear_base + np.array([0.025, 0.0]), ear_tip])
    for u in (front, back):  # near-side legs in front of the body
        add_leg(body_point(u, 0.45), shade=0)
    return figure


def _person_figure(rng: np.random.Generator) -> _Figure:
    """A frontal person, height about 1, head at the top; the person's left is +x (the image's right).

    Shades: 0 the class's clothes colour, 1 skin, 2 hair, 3 dark (eyes, shoes).
    """
    names = PERSON_CLASSES
    head, torso = names.index("head"), names.index("torso")
    figure = _Figure()
    deg = math.radians
    shoulder, hip = rng.uniform(0.1, 0.13), rng.uniform(0.08, 0.1)
    neck_y, hip_y = -0.33, rng.uniform(0.0, 0.03)
    # Legs first (behind the torso), then the torso, arms, head.
    for side, name in ((1, "left-leg"), (-1, "right-leg")):
        class_id = names.index(name)
        base = np.array([side * hip * 0.55, hip_y - 0.02])
        thigh = deg(rng.uniform(0, 22))
        shin = max(deg(-4), thigh + deg(rng.uniform(-12, 12)))
        knee = base + _direction(thigh, side) * 0.24
        ankle = knee + _direction(shin, side) * 0.23
        figure.limb(class_id, 0, base, knee, 0.06, 0.045)
        figure.limb(class_id, 0, knee, ankle, 0.045, 0.035)
        figure.ellipse(class_id, 3, ankle + np.array([side * 0.03, 0.015]), 0.055, 0.025)  # shoe
    figure.polygon(torso, 0, [(-shoulder, neck_y), (shoulder, neck_y), (hip, hip_y), (-hip, hip_y)])
    for side in (1, -1):
        figure.ellipse(torso, 0, (side * (shoulder - 0.025), neck_y + 0.03), 0.035, 0.035)
    for side, name in ((1, "left-arm"), (-1, "right-arm")):
        class_id = names.index(name)
        base = np.array([side * (shoulder + 0.005), neck_y + 0.035])
        upper = deg(rng.uniform(10, 150))
        fore = min(deg(175), max(deg(5), upper + deg(rng.uniform(-45, 60))))
        elbow = base + _direction(upper, side) * 0.16
        hand = elbow + _direction(fore, side) * 0.15
        figure.limb(class_id, 0, base, elbow, 0.04, 0.032)
        figure.limb(class_id, 0, elbow, hand, 0.032, 0.026)
        figure.ellipse(class_id, 1, hand, 0.033, 0.033)  # hand
    head_r = rng.uniform(0.06, 0.075)
    centre = np.array([rng.uniform(-0.01, 0.01), neck_y - head_r * 0.95])
    figure.limb(head, 1, centre + np.array([0, head_r]), centre, 0.03, 0.03)  # neck
    figure.ellipse(head, 1, centre, head_r * 0.9, head_r)
    figure.ellipse(head, 2, centre - np.array([0, head_r * 0.6]), head_r * 0.92, head_r * 0.45)  # hair
    for side in (1, -1):
        eye = centre + np.array([side * head_r * 0.38, -head_r * 0.05])
        figure.ellipse(head, 3, eye, head_r * 0.12, head_r * 0.12, n=10)
    return figure


# The human's materials (the shade index of its pieces): arms, legs and shoes of both sides share theirs, so left
# and right differ only by position; the dress uses TOP for its bodice and its skirt.
SKIN, HAIR, TOP, BOTTOM, SHOES, BELT, BAG, SCARF, HAT, DARK, LIPS, METAL = range(12)
_HUMAN_ID = {name: i for i, name in enumerate(HUMAN_CLASSES)}
_SKIN_TONES = ((240, 205, 180), (225, 180, 145), (200, 150, 110), (160, 110, 75), (120, 80, 55), (90, 60, 40))


def _human_skeleton(rng: np.random.Generator) -> dict[str, Any]:
    """Proportions and joints of a frontal figure about 1 high (head top near y=-0.5, soles near +0.5, centre line
    x=0). Side +1 is the person's left: the figure faces the viewer, so it lies on the image's right (+x)."""
    deg = math.radians
    head_r = rng.uniform(0.055, 0.068)
    s: dict[str, Any] = {"head_r": head_r, "head": np.array([rng.uniform(-0.008, 0.008), -0.5 + head_r])}
    s["neck_y"] = s["head"][1] + head_r + rng.uniform(0.03, 0.045)
    s["shoulder"], s["waist"], s["hip"] = rng.uniform(0.095, 0.125), rng.uniform(0.06, 0.078), rng.uniform(0.08, 0.1)
    s["waist_y"] = s["neck_y"] + rng.uniform(0.23, 0.29)
    s["hip_y"] = s["waist_y"] + rng.uniform(0.06, 0.09)
    ankle_y = rng.uniform(0.44, 0.47)
    s["legs"], s["arms"] = {}, {}
    for side in (1, -1):
        hip = np.array([side * s["hip"] * 0.5, s["hip_y"] - 0.015])
        thigh = deg(rng.uniform(0, 9))
        shin = max(deg(-2), thigh + deg(rng.uniform(-5, 5)))
        length = (ankle_y - hip[1]) / (math.cos(thigh) + math.cos(shin))  # both feet on one ground line
        knee = hip + _direction(thigh, side) * length
        s["legs"][side] = (hip, knee, knee + _direction(shin, side) * length)
        shoulder = np.array([side * (s["shoulder"] - 0.012), s["neck_y"] + 0.025])
        # Mostly hanging arms, sometimes a raised one; a forearm turns at most 8 degrees inwards, so no arm
        # crosses the centre line (left/right stays a matter of the side of the figure).
        upper = deg(rng.uniform(35, 90) if rng.random() < 0.15 else rng.uniform(4, 35))
        fore = min(deg(160), max(deg(-8), upper + deg(rng.uniform(-20, 45))))
        elbow = shoulder + _direction(upper, side) * rng.uniform(0.15, 0.17)
        s["arms"][side] = (shoulder, elbow, elbow + _direction(fore, side) * rng.uniform(0.13, 0.15))
    return s


def _human_outfit(rng: np.random.Generator) -> dict[str, Any]:
    """What the figure wears: the garment set, its cut, and which optional parts it has. Every number is drawn,
    used or not, so that the draws after it do not depend on the outfit."""
    return {
        "garment": ("pants", "skirt", "dress")[rng.choice(3, p=[0.45, 0.3, 0.25])],
        "shorts": rng.random() < 0.3,  # pants only
        "shorts_length": rng.uniform(0.35, 0.75),  # fraction of the thigh
        "sleeves": ("none", "short", "long")[rng.integers(3)],
        "tucked": rng.random() < 0.5,  # the top ends at the waist, else it hangs over the hips
        "top_length": rng.uniform(-0.02, 0.05),  # an untucked top's hem below the hips
        "hem": rng.uniform(0.08, 0.3),  # skirt / dress length below the hips: the legs always show below
        "flare": rng.uniform(0.15, 0.6),
        "fringe": rng.uniform(0.7, 0.85),  # how far up the hair cap sits (in head radii)
        "long_hair": rng.random() < 0.5,
        "hair_length": rng.uniform(0.0, 0.14),  # below the shoulder line
        "hat": rng.random() < 0.25,
        "hat_shape": rng.uniform([0.9, 0.45, 1.1, 0.1], [1.05, 0.6, 1.7, 0.18]),  # crown a, b; brim a, b
        "sunglass": rng.random() < 0.2,
        "belt": rng.random() < 0.35,  # only where the top is tucked in, or on a dress
        "belt_width": rng.uniform(0.008, 0.014),
        "scarf": rng.random() < 0.2,
        "scarf_ends": rng.uniform([-0.05, 0.06], [0.05, 0.2], size=(int(rng.integers(1, 3)), 2)),
        "bag": rng.random() < 0.35,
        "bag_side": int(rng.choice([-1, 1])),
        "bag_style": ("shoulder", "cross-body", "hand")[rng.integers(3)],
        "bag_place": rng.uniform([0.0, -0.06], [0.05, 0.04]),  # out from the hip, up from the hip line
        "bag_size": rng.uniform([0.06, 0.05], [0.11, 0.1]),
        "boots": rng.random() < 0.2,
        "boot_height": rng.uniform(0.2, 0.8),  # fraction of the shin
    }


def _draw_legs_and_bottoms(figure: _Figure, s: dict[str, Any], outfit: dict[str, Any]) -> None:
    """Bare legs and shoes first, then pants (over the legs) or a skirt / the dress's skirt (legs show below)."""
    for side, name in ((1, "left"), (-1, "right")):
        hip, knee, ankle = s["legs"][side]
        leg = _HUMAN_ID[f"{name}-leg"]
        figure.limb(leg, SKIN, hip, knee, 0.05, 0.036)
        figure.limb(leg, SKIN, knee, ankle, 0.036, 0.024)
        shoe = _HUMAN_ID[f"{name}-shoe"]
        figure.ellipse(shoe, SHOES, ankle + np.array([side * 0.006, 0.018]), 0.033, 0.021)
        if outfit["boots"]:  # shafts up the shin: the shoes' height is no constant a rule could use
            figure.limb(shoe, SHOES, ankle, ankle + (knee - ankle) * outfit["boot_height"], 0.028, 0.032)
    waist_y, hip_y, waist, hip_w = s["waist_y"], s["hip_y"], s["waist"], s["hip"]
    if outfit["garment"] == "pants":
        pants = _HUMAN_ID["pants"]
        figure.polygon(
            pants, BOTTOM, [(-waist, waist_y), (waist, waist_y), (hip_w, hip_y), (0, hip_y + 0.03), (-hip_w, hip_y)]
        )
        for side in (1, -1):
            hip, knee, ankle = s["legs"][side]
            if outfit["shorts"]:
                figure.limb(pants, BOTTOM, hip, hip + (knee - hip) * outfit["shorts_length"], 0.056, 0.048)
            else:
                figure.limb(pants, BOTTOM, hip, knee, 0.056, 0.042)
                figure.limb(pants, BOTTOM, knee, ankle - np.array([0.0, 0.006]), 0.042, 0.032)
        return
    skirt = outfit["garment"] == "skirt"
    class_id, shade = (_HUMAN_ID["skirt"], BOTTOM) if skirt else (_HUMAN_ID["dress"], TOP)
    hem_y = hip_y + outfit["hem"]
    hem = hip_w + outfit["hem"] * outfit["flare"] + 0.01
    figure.polygon(
        class_id,
        shade,
        [(-waist, waist_y), (waist, waist_y), (hip_w, hip_y), (hem, hem_y), (-hem, hem_y), (-hip_w, hip_y)],
    )


def _draw_upper_body(figure: _Figure, s: dict[str, Any], outfit: dict[str, Any]) -> None:
    """The top (or the dress's bodice), a belt, bare arms with hands, and sleeves over the arms (labelled as the
    garment, as ATR labels them: an arm is its bare skin)."""
    neck_y, waist_y, shoulder_w, waist = s["neck_y"], s["waist_y"], s["shoulder"], s["waist"]
    dress = outfit["garment"] == "dress"
    top = _HUMAN_ID["dress" if dress else "upper-clothes"]
    points = [(-shoulder_w, neck_y + 0.012), (shoulder_w, neck_y + 0.012), (waist, waist_y)]
    if not (dress or outfit["tucked"]):
        hem_y, hem = s["hip_y"] + outfit["top_length"], s["hip"] + 0.01
        points += [(hem, hem_y), (-hem, hem_y)]
    figure.polygon(top, TOP, [*points, (-waist, waist_y)])
    for side in (1, -1):  # rounded shoulders
        figure.ellipse(top, TOP, (side * (shoulder_w - 0.02), neck_y + 0.03), 0.032, 0.03)
    if outfit["belt"] and (dress or outfit["tucked"]):
        band, belt, x = outfit["belt_width"], _HUMAN_ID["belt"], waist + 0.004
        figure.polygon(
            belt, BELT, [(-x, waist_y - band), (x, waist_y - band), (x, waist_y + band), (-x, waist_y + band)]
        )
        figure.ellipse(belt, METAL, (0.0, waist_y), band * 1.2, band * 0.9, n=12)  # buckle
    for side, name in ((1, "left"), (-1, "right")):
        shoulder, elbow, hand = s["arms"][side]
        arm = _HUMAN_ID[f"{name}-arm"]
        figure.limb(arm, SKIN, shoulder, elbow, 0.027, 0.021)
        figure.limb(arm, SKIN, elbow, hand, 0.021, 0.017)
        figure.ellipse(arm, SKIN, hand, 0.022, 0.024, n=16)
        if outfit["sleeves"] == "short":
            figure.limb(top, TOP, shoulder, shoulder + (elbow - shoulder) * 0.5, 0.034, 0.03)
        elif outfit["sleeves"] == "long":
            figure.limb(top, TOP, shoulder, elbow, 0.033, 0.027)
            figure.limb(top, TOP, elbow, elbow + (hand - elbow) * 0.85, 0.027, 0.022)


def _draw_head(figure: _Figure, s: dict[str, Any], outfit: dict[str, Any]) -> None:
    """Neck and face (ATR has no neck class; the neck's skin is labelled face), eyes and mouth (face), a hair cap,
    long hair's locks over the shoulders, a hat, sunglasses."""
    face, hair, r, centre = _HUMAN_ID["face"], _HUMAN_ID["hair"], s["head_r"], s["head"]
    figure.limb(face, SKIN, (centre[0], s["neck_y"] + 0.012), centre + np.array([0.0, r * 0.5]), 0.02, 0.02)
    figure.ellipse(face, SKIN, centre, r * 0.8, r)
    for side in (1, -1):
        figure.ellipse(face, DARK, centre + np.array([side * r * 0.33, r * 0.05]), r * 0.1, r * 0.08, n=10)
    figure.ellipse(face, LIPS, centre + np.array([0.0, r * 0.55]), r * 0.22, r * 0.07, n=12)
    figure.ellipse(hair, HAIR, centre - np.array([0.0, r * outfit["fringe"]]), r * 0.88, r * 0.62)
    if outfit["long_hair"]:
        for side in (1, -1):
            lock_end = (centre[0] + side * r * 0.95, s["neck_y"] + outfit["hair_length"])
            figure.limb(hair, HAIR, centre + np.array([side * r * 0.92, -r * 0.2]), lock_end, 0.017, 0.017)
    if outfit["hat"]:
        crown_a, crown_b, brim_a, brim_b = outfit["hat_shape"] * r
        figure.ellipse(_HUMAN_ID["hat"], HAT, centre - np.array([0.0, r * 0.85]), crown_a, crown_b)
        figure.ellipse(_HUMAN_ID["hat"], HAT, centre - np.array([0.0, r * 0.55]), brim_a, brim_b)
    if outfit["sunglass"]:
        glasses = _HUMAN_ID["sunglass"]
        for side in (1, -1):
            figure.ellipse(glasses, DARK, centre + np.array([side * r * 0.33, r * 0.05]), r * 0.27, r * 0.19, n=14)
        figure.polygon(
            glasses,
            DARK,
            [(centre[0] - r * 0.1, centre[1]), (centre[0] + r * 0.1, centre[1])]
            + [(centre[0] + r * 0.1, centre[1] + r * 0.07), (centre[0] - r * 0.1, centre[1] + r * 0.07)],
        )


def _draw_accessories(figure: _Figure, s: dict[str, Any], outfit: dict[str, Any]) -> None:
    """A scarf round the neck with one or two hanging ends, and a bag on a strap (from the same shoulder, across
    the chest from the other one, or from the hand) at one side."""
    if outfit["scarf"]:
        scarf, x, neck_y = _HUMAN_ID["scarf"], s["head"][0], s["neck_y"]
        figure.ellipse(scarf, SCARF, (x, neck_y), 0.05, 0.022)
        for dx, length in outfit["scarf_ends"]:
            figure.limb(scarf, SCARF, (x + dx * 0.4, neck_y), (x + dx, neck_y + length), 0.018, 0.02)
    if not outfit["bag"]:
        return
    bag, side, style = _HUMAN_ID["bag"], outfit["bag_side"], outfit["bag_style"]
    shoulder, elbow, hand = s["arms"][side]
    if style == "hand" and hand[1] > elbow[1] + 0.05:  # only a hanging hand holds the bag
        strap_from, top = hand, hand + np.array([0.0, 0.04])
    else:
        out, up = outfit["bag_place"]
        strap_from = s["arms"][-side if style == "cross-body" else side][0]
        top = np.array([side * (s["hip"] + out), s["hip_y"] - up])
    figure.limb(bag, BAG, strap_from, top, 0.006, 0.006)
    w, h = outfit["bag_size"] / 2
    x, y = top
    figure.polygon(bag, BAG, [(x - w, y), (x + w, y), (x + w * 1.1, y + 2 * h), (x - w * 1.1, y + 2 * h)])


def _human_figure(rng: np.random.Generator) -> _Figure:
    """A frontal dressed figure in ATR's classes, height about 1, the person's left at +x (the image's right)."""
    s, outfit = _human_skeleton(rng), _human_outfit(rng)
    figure = _Figure()
    if outfit["long_hair"]:  # the hair behind the head and neck, hidden by the body below the shoulders
        x, y, r, down = s["head"][0], s["head"][1], s["head_r"], s["neck_y"] + outfit["hair_length"]
        back = [(x - r * 0.95, y - r * 0.3), (x + r * 0.95, y - r * 0.3), (x + r * 1.05, down), (x - r * 1.05, down)]
        figure.polygon(_HUMAN_ID["hair"], HAIR, back)
    _draw_legs_and_bottoms(figure, s, outfit)
    _draw_upper_body(figure, s, outfit)
    _draw_head(figure, s, outfit)
    _draw_accessories(figure, s, outfit)
    return figure


def _human_materials(rng: np.random.Generator) -> np.ndarray:
    """(12, 3) float32 colours, one per material (SKIN ... METAL)."""
    skin = np.asarray(_SKIN_TONES[rng.integers(len(_SKIN_TONES))], np.float32) + rng.uniform(-10, 10, size=3)
    hair = np.array([(25, 20, 15), (70, 45, 25), (120, 80, 40), (200, 170, 110), (150, 150, 145)][rng.integers(5)])
    clothes = rng.integers(15, 241, size=(6, 3))  # top, bottom, shoes, belt, bag, scarf: independent colours
    hat = rng.integers(15, 241, size=3)
    dark, lips, metal = np.full(3, rng.uniform(10, 45)), skin * 0.7 + np.array([40, 0, 0]), np.array([195, 190, 170])
    colours = [skin, hair + rng.uniform(-10, 10, size=3), *clothes, hat, dark, lips, metal]
    return np.clip(np.stack(colours), 0, 255).astype(np.float32)


def _garment_patterns(
    rng: np.random.Generator, colours: np.ndarray, shades: np.ndarray, ys: np.ndarray, xs: np.ndarray, texture
) -> None:
    """Paints stripes, checks or dots in a second colour on some garments, in place: a garment's colour alone
    then does not identify it, and its texture is no cue either (any garment may carry any pattern)."""
    for material in (TOP, BOTTOM, SCARF, BAG, HAT):
        pattern, period = int(rng.integers(6)), rng.uniform(3.0, 7.0)
        second, phase = rng.integers(0, 256, size=3).astype(np.float32), rng.uniform(0, period, size=2)
        y, x = (ys + phase[0]) % period, (xs + phase[1]) % period
        half = period / 2
        marks = {
            2: y < half,  # horizontal stripes
            3: x < half,  # vertical stripes
            4: (y < half) ^ (x < half),  # checks
            5: (y - half) ** 2 + (x - half) ** 2 < (period / 4) ** 2 + 0.5,  # dots
        }
        if pattern in marks:  # 0 and 1: plain
            selected = (shades == material) & marks[pattern]
            colours[selected] = second + texture[selected]


def _clutter(
    rng: np.random.Generator,
    image: Image.Image,
    size: int | tuple[int, int],
    count: int,
    coat: tuple[int, int, int] | None,
) -> None:
    """Random rectangles, ellipses and lines (some in the figure's coat colour) drawn on the background; `size`
    is the side of a square image or (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    scale = np.array([width, height], np.float64)  # for a square image the same numbers as `* size`
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        if coat is not None and rng.random() < 0.2:
            colour = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in coat)
        else:
            colour = tuple(int(v) for v in rng.integers(30, 226, size=3))
        x0, y0 = rng.uniform(-0.1, 1.0, size=2) * scale
        w, h = rng.uniform(0.04, 0.3, size=2) * scale
        kind = rng.integers(3)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            end = (x0 + rng.uniform(-1, 1) * w * 2, y0 + rng.uniform(-1, 1) * h * 2)
            draw.line([x0, y0, *end], fill=colour, width=int(rng.integers(2, 7)))


def _rasterise(figure: _Figure, height: int, width: int) -> np.ndarray:
    """(H, W) int32 map of 1 + piece index (0: none), later pieces in front."""
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for k, (_, _, _, points) in enumerate(figure.pieces):
        draw.polygon(points, fill=k + 1)
    return np.asarray(canvas, dtype=np.int32)


def _fit(rng: np.random.Generator, figure: _Figure, size: int, extent: tuple[float, float], mirror: bool) -> None:
    """Scales the figure so its longer side is a random fraction `extent` of the image, and places it."""
    points = figure.points()
    low, high = points.min(0), points.max(0)
    span = float(max(high - low))
    scale = rng.uniform(*extent) * size / span
    margin = 0.03 * size
    width, height = (high - low) * scale
    if mirror:
        low = np.array([-high[0], low[1]])
    x = rng.uniform(margin, max(margin, size - margin - width)) - low[0] * scale
    y = rng.uniform(margin, max(margin, size - margin - height)) - low[1] * scale
    figure.transform(scale, (x, y), mirror)


def _fit_upright(rng: np.random.Generator, figure: _Figure, height: int, width: int) -> None:
    """Scales a standing figure to 70-95% of the image height (less where it would not fit the width) and places
    it wholly inside, anywhere the 2% margins allow."""
    points = figure.points()
    low, high = points.min(0), points.max(0)
    span = high - low
    scale = min(rng.uniform(0.7, 0.95) * height / span[1], 0.96 * width / span[0])
    margin = 0.02 * np.array([width, height])
    room = np.maximum(np.array([width, height]) - 2 * margin - span * scale, 0.0)
    x, y = margin + rng.uniform(0.0, 1.0, size=2) * room - low * scale
    figure.transform(scale, (x, y))


def _scene_figure(rng: np.random.Generator, kind: str, height: int, width: int) -> tuple[_Figure, Any, np.ndarray]:
    """The kind's figure, placed in the image, with its colouring: (figure, piece_colour(class_id, shade) -> RGB,
    coat: the colour some clutter copies)."""
    if kind == "animal":
        coat = rng.integers(25, 230, size=3).astype(np.float32)
        figure = _animal_figure(rng)
        _fit(rng, figure, height, (0.45, 0.9), mirror=bool(rng.random() < 0.5))
        shades = [coat, coat * 0.8]  # near parts, far legs
        return figure, lambda class_id, shade: shades[shade], coat
    if kind == "person":
        skin = np.array([(235, 200, 170), (200, 150, 110), (150, 100, 70), (95, 65, 45)][rng.integers(4)], np.float32)
        shirt = rng.integers(20, 236, size=3).astype(np.float32)
        pants = rng.integers(20, 236, size=3).astype(np.float32)
        hair, dark = rng.integers(10, 110, size=3).astype(np.float32), np.full(3, 25, np.float32)
        sleeves = skin if rng.random() < 0.5 else shirt
        clothes = {1: skin, 2: shirt, 3: sleeves, 4: sleeves, 5: pants, 6: pants}  # arms alike, legs alike
        figure = _person_figure(rng)
        _fit(rng, figure, height, (0.55, 0.92), mirror=False)
        return figure, lambda class_id, shade: (clothes[class_id], skin, hair, dark)[shade], shirt
    materials = _human_materials(rng)
    figure = _human_figure(rng)
    _fit_upright(rng, figure, height, width)
    return figure, lambda class_id, shade: materials[shade], materials[TOP]


def _coat_patches(rng: np.random.Generator, colours, texture, inside: np.ndarray, size: int) -> None:
    """Recolours random elliptic patches of the animal's coat, in place."""
    patches = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(patches)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(0.03, 0.1, size=2) * size
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=1)
    patched = np.asarray(patches, bool)[inside]
    colours[patched] = rng.integers(0, 256, size=3).astype(np.float32) + texture[patched]


def parsing_scene(
    rng: np.random.Generator, size: int | Sequence[int] | None = None, kind: str = "animal", noise: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draws one parsing image: (image (H, W, 3) uint8, labels (H, W) uint8 ids into parsing_class_names(kind)).

    `size`: an int side, (height, width), or None for the kind's default (`PARSING_IMAGE_SHAPES`); the animal and
    the person are drawn for square images. The figure lies wholly inside the image; every part class is drawn
    (parts may hide each other in part), except the human's optional parts.
    """
    parsing_class_names(kind)
    height, width = _image_shape(size, kind)
    if kind != "human" and height != width:
        raise ValueError(f"the {kind} kind draws square images, got {height}x{width}")
    # Background: a horizon (sky or wall above, ground below) with smooth texture, then clutter.
    sky, ground = rng.uniform(90, 220, size=3).astype(np.float32), rng.uniform(50, 170, size=3).astype(np.float32)
    rows = (np.arange(height, dtype=np.float32) / height)[:, None, None]
    blend = np.clip((rows - np.float32(rng.uniform(0.35, 0.7))) * 12 + 0.5, 0, 1)
    background = sky * (1 - blend) + ground * blend + _smooth_field(rng, (height, width), 8, 18.0)[..., None]
    figure, piece_colour, coat = _scene_figure(rng, kind, height, width)
    canvas = Image.fromarray(np.clip(np.rint(background), 0, 255).astype(np.uint8))
    _clutter(rng, canvas, (height, width), int(rng.integers(4, 12)), tuple(int(v) for v in coat))
    image = np.asarray(canvas, dtype=np.float32).copy()
    pieces = _rasterise(figure, height, width)
    palette = np.zeros((len(figure.pieces) + 1, 3), np.float32)
    piece_labels = np.zeros(len(figure.pieces) + 1, np.uint8)
    piece_shades = np.zeros(len(figure.pieces) + 1, np.int64)
    for k, (class_id, shade, _, _) in enumerate(figure.pieces):
        piece_labels[k + 1], palette[k + 1], piece_shades[k + 1] = class_id, piece_colour(class_id, shade), shade
    labels = piece_labels[pieces]
    # Texture over the figure: one smooth brightness field for all parts, and (animal) coat patches or (human)
    # garment patterns.
    inside = pieces > 0
    texture = _smooth_field(rng, (height, width), 10, 22.0)[inside][:, None]
    colours = palette[pieces[inside]] + texture
    if kind == "animal" and rng.random() < 0.4:
        _coat_patches(rng, colours, texture, inside, height)
    if kind == "human":
        ys, xs = np.nonzero(inside)
        _garment_patterns(rng, colours, piece_shades[pieces[inside]], ys, xs, texture)
    image[inside] = colours
    return _finish(image, rng, noise), labels


def parsing_examples(
    seed: int | Sequence[int],
    count: int,
    image_size: int | Sequence[int] | None = None,
    kind: str = "animal",
    *,
    start: int = 0,
    noise: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yields `count` parsing examples {image (H, W, 3) uint8, labels (H, W) uint8, index}.

    Args:
        seed: an int or a sequence of ints; example i uses default_rng([*seed, i]).
        count: number of examples.
        image_size: an int side S (S x S), a (height, width) pair, or None: the kind's default
            (`PARSING_IMAGE_SHAPES`: 321 x 321 as in the LG-LSTM paper's Horse-Cow setting; 150 x 100 for "human",
            the Co-CNN's ATR input). "animal" and "person" need a square.
        kind: "animal" (classes ANIMAL_CLASSES), "person" (PERSON_CLASSES) or "human" (HUMAN_CLASSES, ATR's).
        start: index of the first example.
        noise: per-pixel noise amplitude (0: none).
    """
    parsing_class_names(kind)
    shape = _image_shape(image_size, kind)
    for index in range(start, start + count):
        image, labels = parsing_scene(_example_rng(seed, index), shape, kind, noise)
        yield {"image": image, "labels": labels, "index": index}
