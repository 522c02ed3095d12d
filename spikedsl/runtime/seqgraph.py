"""seqGraph: harmonic paths as 28x28 frame sequences (pure numpy).

A reconstruction of the 2D partition of the seqGraph data set (spiking ConvLSTM
for semantic music generation).  The music-theory part follows the paper:

* 49 chords: 7 diatonic degrees (I..VII) x 4 seventh-chord forms
  (``7 56 34 2``) + 7 degrees x 3 triad forms (``35 6 46``);
* a *graph* joins two successive forms of one degree's seventh chord (its
  *tops*) by three passing triads (its *edges*), e.g. ``I7 - {V46, VII6, II35} -
  I56``; the three graphs of one degree form a *horizontal triad*, graphs that
  share their edge triads form a *vertical triad*;
* each graph is a 3x3 block; the 21 graphs tile a 21x27 matrix padded to 28x28;
* a sequence of 5 chords becomes 5 frames filled progressively (frame ``t``
  shows chords ``0..t`` and the path between them); frames 0-3 are the input,
  frame 4 the target;
* augmentation adds a normalisation term (0.01..0.1, 10 steps) to the drawn
  pixels, turning 216 base sequences into 2160.

Where the paper is vague (which 216 sequences, the exact layout and values)
the choices are documented in ``docs/data.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEGREES: tuple[str, ...] = ("I", "II", "III", "IV", "V", "VI", "VII")
SEVENTH_FORMS: tuple[str, ...] = ("7", "56", "34", "2")  # root position, 1st..3rd inversion
TRIAD_FORMS: tuple[str, ...] = ("35", "6", "46")  # root position, 1st, 2nd inversion
FRAME = 28
SEQ_LEN = 5
N_INPUT = 4
N_BASE = 216
DEFAULT_DEGREES: tuple[str, ...] = ("I", "IV", "V")  # tonic, subdominant, dominant
DEFAULT_TERMS: tuple[float, ...] = tuple(float(t) for t in np.round(np.linspace(0.01, 0.1, 10), 4))
VALUE_LOW, VALUE_HIGH = 0.2, 0.9  # chord values span [0.2, 0.9]; a term <= 0.1 keeps <= 1
LINE_VALUE = 0.1  # path pixels: dimmer than every chord

# Passing triads of graph k (k=0: 7->56, 1: 56->34, 2: 34->2) of degree d:
# degree offsets (from d) of the 46, 6 and 35 triads, read off the paper's examples
# (I7-V46-I56, I7-VII6-I56, I7-II35-I56; I56-VII46/II6/IV35-I34; I34-II46/IV6/VI35-I2).
_PASSING_OFFSETS: tuple[tuple[int, int, int], ...] = ((4, 6, 1), (6, 1, 3), (1, 3, 5))
# Degrees ordered by thirds (I III V VII II IV VI): row of a degree's horizontal triad.
_THIRDS: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5)
_ROW_OFFSET = 3  # 21 rows of graphs + 3 padding rows above, 4 below
_COL_OFFSET = 0  # 27 columns of graphs + 1 padding column on the right
# Cell of each slot inside a graph's 3x3 block.
_START, _END = (1, 0), (1, 2)
_EDGE_CELLS: tuple[tuple[int, int], ...] = ((0, 1), (1, 1), (2, 1))  # 46, 6, 35

_CHORD_RE = re.compile(r"^(VII|VI|V|IV|III|II|I)(7|56|34|2|35|6|46)$")


@dataclass(frozen=True)
class Chord:
    """A diatonic chord: ``degree`` 0..6 (I..VII) and its ``form`` (``"56"``, ``"35"`` …)."""

    degree: int
    form: str

    @property
    def name(self) -> str:
        return DEGREES[self.degree] + self.form

    @property
    def is_seventh(self) -> bool:
        return self.form in SEVENTH_FORMS

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Graph:
    """One graph of the system: two tops joined by three passing triads."""

    degree: int
    k: int  # 0: 7->56, 1: 56->34, 2: 34->2
    start: Chord
    end: Chord
    edges: tuple[Chord, Chord, Chord]  # 46, 6, 35 triads
    row: int  # block row in the 7x9 grid of graphs
    col: int  # block column


@dataclass
class SeqGraph:
    """Generated sequences: ``frames`` [N, 5, 1, 28, 28] float32 in [0, 1]."""

    frames: np.ndarray
    progressions: list[tuple[str, ...]]  # chord names per sequence
    base_index: np.ndarray  # int64 [N]: which base sequence (augmented copies share it)
    terms: np.ndarray  # float32 [N]: normalisation term added to the drawn pixels

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def parse_chord(text: str) -> Chord:
    """``"VI46"``, ``"II_{56}"`` or ``"I_7"`` -> :class:`Chord`; ValueError otherwise."""
    m = _CHORD_RE.match(re.sub(r"[\s_{}]", "", text))
    if not m:
        raise ValueError(
            f"not a chord: {text!r} (expected a degree I..VII followed by one of "
            f"{', '.join(SEVENTH_FORMS + TRIAD_FORMS)}, e.g. 'II7', 'VI46')"
        )
    return Chord(DEGREES.index(m.group(1)), m.group(2))


def all_chords() -> list[Chord]:
    """The 49 chords in dictionary order (degree-major, sevenths before triads)."""
    return [Chord(d, f) for d in range(7) for f in SEVENTH_FORMS + TRIAD_FORMS]


def chord_dictionary() -> dict[str, int]:
    """Chord name -> dictionary index 1..49 (0 is the empty background)."""
    return {c.name: i + 1 for i, c in enumerate(all_chords())}


def chord_value(chord: Chord | str) -> float:
    """Pixel value of a chord before augmentation: index 1..49 mapped linearly to 0.2..0.9."""
    c = parse_chord(chord) if isinstance(chord, str) else chord
    return VALUE_LOW + (VALUE_HIGH - VALUE_LOW) * (_DICT[c.name] - 1) / 48.0


_DICT = chord_dictionary()


def graphs() -> list[Graph]:
    """The 21 graphs, placed on a staircase of 7 block rows x 9 block columns."""
    return list(_GRAPHS)


def _build_graphs() -> tuple[Graph, ...]:
    out = []
    for d in range(7):
        row = _THIRDS.index(d)
        for k in range(3):
            start, end = Chord(d, SEVENTH_FORMS[k]), Chord(d, SEVENTH_FORMS[k + 1])
            edges = tuple(
                Chord((d + off) % 7, form)
                for off, form in zip(_PASSING_OFFSETS[k], TRIAD_FORMS[::-1], strict=True)
            )
            out.append(Graph(d, k, start, end, edges, row, row + k))  # type: ignore[arg-type]
    return tuple(out)


_GRAPHS = _build_graphs()


def _cell(g: Graph, rc: tuple[int, int]) -> tuple[int, int]:
    return (_ROW_OFFSET + 3 * g.row + rc[0], _COL_OFFSET + 3 * g.col + rc[1])


def chord_positions(chord: Chord | str) -> list[tuple[int, int]]:
    """Every (row, col) of the 28x28 grid where a chord sits (1 to 3 places)."""
    c = parse_chord(chord) if isinstance(chord, str) else chord
    pos = []
    for g in _GRAPHS:
        if g.start == c:
            pos.append(_cell(g, _START))
        if g.end == c:
            pos.append(_cell(g, _END))
        for e, rc in zip(g.edges, _EDGE_CELLS, strict=True):
            if e == c:
                pos.append(_cell(g, rc))
    return sorted(pos)


def _line(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """Bresenham line from ``a`` to ``b`` (both ends included)."""
    (r0, c0), (r1, c1) = a, b
    dr, dc = abs(r1 - r0), -abs(c1 - c0)
    sr, sc = (1 if r1 > r0 else -1), (1 if c1 > c0 else -1)
    err, pts = dr + dc, []
    while True:
        pts.append((r0, c0))
        if (r0, c0) == (r1, c1):
            return pts
        e2 = 2 * err
        if e2 >= dc:
            err += dc
            r0 += sr
        if e2 <= dr:
            err += dr
            c0 += sc


def _nearest_pair(
    a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The closest instances of two chords (ties: first in row-major order)."""
    return min(
        ((p, q) for p in a for q in b),
        key=lambda pq: (pq[0][0] - pq[1][0]) ** 2 + (pq[0][1] - pq[1][1]) ** 2,
    )


def render_sequence(
    chords: Sequence[Chord | str],
    term: float = 0.0,
    lines: bool = True,
    line_value: float = LINE_VALUE,
) -> np.ndarray:
    """Frames [len, 1, 28, 28] of a progression, filled progressively.

    Frame ``t`` shows chords ``0..t`` at all their places (value
    :func:`chord_value`) and, with ``lines``, the harmonic path: a line of
    ``line_value`` between the nearest places of successive chords.  ``term``
    is added to every drawn pixel.
    """
    cs = [parse_chord(c) if isinstance(c, str) else c for c in chords]
    if not 0.0 <= term <= 1.0 - VALUE_HIGH + 1e-9:
        raise ValueError(f"term must lie in [0, {1 - VALUE_HIGH:g}], got {term}")
    pos = [chord_positions(c) for c in cs]
    frames = np.zeros((len(cs), 1, FRAME, FRAME), dtype=np.float32)
    line_px: list[list[tuple[int, int]]] = [[]]
    for t in range(1, len(cs)):
        line_px.append(_line(*_nearest_pair(pos[t - 1], pos[t])) if lines else [])
    for t in range(len(cs)):
        img = frames[t, 0]
        for s in range(t + 1):
            for r, c in line_px[s]:
                img[r, c] = line_value + term
        for s in range(t + 1):
            v = chord_value(cs[s]) + term
            for r, c in pos[s]:
                img[r, c] = v
    return np.clip(frames, 0.0, 1.0)


def progressions(degrees: Sequence[str] = DEFAULT_DEGREES) -> list[tuple[str, ...]]:
    """Base progressions: two passing progressions chained in one horizontal triad.

    For each degree, every walk ``top - triad - top - triad - top`` along the
    degree's graphs (forwards or back, e.g. ``I7 V46 I56 II6 I34`` or
    ``I56 VII46 I34 IV35 I56``) whose four input chords are distinct; the
    target may repeat an input chord.  That is 72 walks per degree, so the
    default tonic, subdominant and dominant give 216.
    """
    out: list[tuple[str, ...]] = []
    for name in degrees:
        d = DEGREES.index(name) if name in DEGREES else -1
        if d < 0:
            raise ValueError(f"unknown degree {name!r}; use one of {', '.join(DEGREES)}")
        edges = {g.k: g for g in _GRAPHS if g.degree == d}  # graph k joins form k and k+1
        for i0 in range(4):
            for i1 in (i0 - 1, i0 + 1):
                for i2 in (i1 - 1, i1 + 1):
                    if not (0 <= i1 < 4 and 0 <= i2 < 4):
                        continue
                    g1, g2 = edges[min(i0, i1)], edges[min(i1, i2)]
                    for t1 in g1.edges:
                        for t2 in g2.edges:
                            if t1 == t2:
                                continue
                            out.append(
                                (DEGREES[d] + SEVENTH_FORMS[i0], t1.name,
                                 DEGREES[d] + SEVENTH_FORMS[i1], t2.name,
                                 DEGREES[d] + SEVENTH_FORMS[i2])
                            )
    return out


def generate(
    augment: bool = False,
    terms: Sequence[float] = DEFAULT_TERMS,
    degrees: Sequence[str] = DEFAULT_DEGREES,
    lines: bool = True,
    line_value: float = LINE_VALUE,
) -> SeqGraph:
    """All base sequences (term 0), or with ``augment`` one copy per term (216 -> 2160)."""
    progs = progressions(degrees)
    base = np.stack([render_sequence(p, 0.0, lines, line_value) for p in progs])
    if not augment:
        return SeqGraph(
            frames=base,
            progressions=list(progs),
            base_index=np.arange(len(progs), dtype=np.int64),
            terms=np.zeros(len(progs), dtype=np.float32),
        )
    ts = [float(t) for t in terms]
    if not ts or any(not 0.0 <= t <= 1.0 - VALUE_HIGH + 1e-9 for t in ts):
        raise ValueError(f"terms must be non-empty and lie in [0, {1 - VALUE_HIGH:g}]: {ts}")
    drawn = base > 0
    frames = np.concatenate([np.where(drawn, base + np.float32(t), 0.0) for t in ts])
    n = len(progs)
    return SeqGraph(
        frames=np.clip(frames, 0.0, 1.0).astype(np.float32),
        progressions=list(progs) * len(ts),
        base_index=np.tile(np.arange(n, dtype=np.int64), len(ts)),
        terms=np.repeat(np.asarray(ts, dtype=np.float32), n),
    )


def split(sg: SeqGraph, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices, grouped so augmented copies of one base sequence
    never straddle the split.  ``round(n_base * val_fraction)`` bases go to validation."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    groups = np.unique(sg.base_index)
    rng = np.random.default_rng(seed)
    n_val = round(len(groups) * val_fraction)
    val_groups = rng.permutation(groups)[:n_val]
    is_val = np.isin(sg.base_index, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)
