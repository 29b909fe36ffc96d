"""Where each layer of a YOLOv9 paper-repository model sits in ours: one index table per upstream layout.

Upstream layers are ``model.{i}`` in the order of their YAML (``models/detect/<name>.yaml``); ours are
``layers.{j}`` in the order of ``models/gelan/<name>.yaml``. A ``Layout`` says, for one upstream YAML, which
``j`` each ``i`` is. t/s/m/c follow one rule (``rule_layout``); yolov9-e / gelan-e are written out by hand
(``E_LAYOUTS``), read off the two YAMLs, because their YOLOv9 file puts the auxiliary FPN before the main neck
while ours puts it after the main head.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Layout:
    """One upstream layout. ``layers``: their index -> ours, for every layer but the detection layer (with the
    parameter-free ones: Upsample, Concat, CBFuse, so the table can be checked as a whole against our model);
    ``detect``: their detection layer's index (``DualDDetect`` when ``dual``: ``cv2``/``cv3`` are the auxiliary
    head's branches, ``cv4``/``cv5`` the main head's); ``aux``: their indices of the auxiliary branch, dropped
    when the target is a GELAN model."""

    name: str
    layers: dict[int, int]
    detect: int
    dual: bool
    aux: frozenset[int] = field(default_factory=frozenset)


def rule_layout(first: int, detect: int, dual: bool, main: int) -> Layout:
    """t/s/m/c: their ``i`` is our ``i - first`` (``first`` = 1 after a parameter-free ``Silence`` layer) up to
    our main head ``main``; their auxiliary layers follow their neck as ours follow our main head, so from there
    ours is one index later."""

    def ours(i: int) -> int:
        j = i - first
        return j if j < main else j + 1

    span = range(first, detect)
    aux = frozenset(i for i in span if i - first >= main)
    return Layout("rule", {i: ours(i) for i in span}, detect, dual, aux)


def _spans(rows: tuple[tuple[int, int, int, str], ...]) -> dict[int, int]:
    """``(their first, their last, our first, what)`` rows -> ``{their i: our j}`` (inclusive ranges)."""
    table: dict[int, int] = {}
    for lo, hi, ours, _what in rows:
        table.update({i: ours + k for k, i in enumerate(range(lo, hi + 1))})
    return table


# Upstream commit 5b1ea9a. Their layer 0 is a parameter-free Silence (no counterpart in ours).
_BACKBONE_E = (
    (1, 9, 0, "first backbone: Conv, Conv, RepNCSPELAN4 (S2), ADown, RepNCSPELAN4 (S3), ..., RepNCSPELAN4 (S5)"),
    (10, 14, 9, "CBLinear from S1, S2, S3, S4, S5 (L1..L5)"),
    (15, 28, 14, "second backbone from the image: Conv, CBFuse, Conv, CBFuse, ..., CBFuse, RepNCSPELAN4 (B5)"),
)

# models/detect/yolov9-e.yaml -> models/gelan/yolov9-e.yaml (ours: neck 28-40, main DDetect 41, aux 42-49)
YOLOV9_E = Layout(
    "yolov9-e",
    _spans(
        (
            *_BACKBONE_E,
            (29, 35, 42, "auxiliary FPN on S5/S4/S3: SPPELAN (A5), Upsample, Concat, RepNCSPELAN4 (A4), ..., (A3)"),
            (36, 48, 28, "main neck: SPPELAN (N5), Upsample, Concat, RepNCSPELAN4 (N4), ..., RepNCSPELAN4 (P5)"),
        )
    ),
    detect=49,  # DualDDetect(A3, A4, A5, P3, P4, P5): cv2/cv3 -> our 49 (aux head), cv4/cv5 -> our 41 (main)
    dual=True,
    aux=frozenset(range(29, 36)),
)

# models/detect/gelan-e.yaml -> models/gelan/gelan-e.yaml (ours: neck 28-40, DDetect 41)
GELAN_E = Layout(
    "gelan-e",
    _spans(
        (
            *_BACKBONE_E,
            (29, 41, 28, "neck: SPPELAN (N5), Upsample, Concat, RepNCSPELAN4 (N4), ..., RepNCSPELAN4 (P5)"),
        )
    ),
    detect=42,  # DDetect(P3, P4, P5): cv2/cv3 -> our 41
    dual=False,
)

E_LAYOUTS: tuple[Layout, ...] = (YOLOV9_E, GELAN_E)
"""The hand-written tables, recognised by their detection layer's index and kind (no t/s/m/c file has a
detection layer at 42 or a DualDDetect at 49); a key outside a table's layers then fails as unmapped."""


def find_layout(first: int, detect: int, dual: bool, main: int) -> Layout:
    """The hand-written table for a detection layer at ``detect`` (``dual``: a DualDDetect), else the t/s/m/c
    rule (``first``: their first layer index with tensors; ``main``: our main head's index)."""
    for layout in E_LAYOUTS:
        if (layout.detect, layout.dual) == (detect, dual):
            return layout
    return rule_layout(first, detect, dual, main)
