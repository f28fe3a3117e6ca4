"""The embedded default dataset: procedural part-annotated shapes built from parametric primitives.

Fourteen training categories and four held-out ones, each a small program that places boxes, cylinders,
cones, ellipsoids and tori with random proportions and styles (round or square legs, slatted or solid
backrests, optional armrests, two or four engines, ...). Every primitive belongs to a named part; the surface
is sampled area-weighted, so every point carries the name of the part it lies on. The held-out categories
(stool, bench, jug, scooter) are made of part names that only occur in other categories (a stool is a seat
and legs), so they measure generalisation through text.

Shapes are Y-up, front +Z, centred on their mean and scaled into the unit sphere. Shape `i` of a split is of
category `i mod C` and is drawn from a generator seeded by `(seed, split, i)`: any prefix covers every
category and a shape does not depend on how many are generated. Generation is cached on disk.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pa3d_models.files import atomic_write_with

from .base import PartDataset
from .sample import PartSample

__all__ = [
    "SyntheticPartDataset",
    "generate_synthetic",
    "synthetic_shape",
    "SYNTHETIC_PART_NAMES",
    "SYNTHETIC_TRAIN_CATEGORIES",
    "SYNTHETIC_HELDOUT_CATEGORIES",
    "SYNTHETIC_VERSION",
]

SYNTHETIC_VERSION = 1
"""Bumped whenever generation changes, so stale caches are never read."""

SYNTHETIC_PART_NAMES: dict[str, list[str]] = {
    # training categories
    "chair": ["seat", "backrest", "leg", "armrest"],
    "table": ["tabletop", "leg"],
    "lamp": ["base", "pole", "lampshade"],
    "mug": ["body", "handle"],
    "airplane": ["fuselage", "wing", "tail", "engine"],
    "guitar": ["body", "neck", "headstock"],
    "car": ["body", "roof", "wheel"],
    "rocket": ["body", "nose", "fin"],
    "bicycle": ["wheel", "frame", "seat", "handlebar"],
    "skateboard": ["deck", "wheel"],
    "teapot": ["body", "spout", "handle", "lid"],
    "bottle": ["body", "neck", "cap"],
    "umbrella": ["canopy", "shaft", "handle"],
    "bed": ["frame", "mattress", "headboard", "pillow"],
    # held-out categories: every part name also occurs in a training category
    "stool": ["seat", "leg"],
    "bench": ["seat", "backrest", "leg"],
    "jug": ["body", "handle", "spout"],
    "scooter": ["deck", "wheel", "pole", "handlebar"],
}
"""Part names of every synthetic category, in label order."""

SYNTHETIC_TRAIN_CATEGORIES: tuple[str, ...] = (
    "chair", "table", "lamp", "mug", "airplane", "guitar", "car", "rocket", "bicycle", "skateboard", "teapot",
    "bottle", "umbrella", "bed",
)
SYNTHETIC_HELDOUT_CATEGORIES: tuple[str, ...] = ("stool", "bench", "jug", "scooter")
_SPLITS = {"train": 0, "test": 1, "heldout_categories": 2}

# --- primitives ----------------------------------------------------------------------------------------------
# A primitive is (kind, params, R, t, area): local surface samples x map to world R @ x + t. Rigid maps only,
# so areas (and the area weighting) are exact.

_Prim = tuple[str, tuple[float, ...], np.ndarray, np.ndarray, float]
_EYE = np.eye(3)


def _rot_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation taking unit vector a onto unit vector b."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:
        return np.diag([1.0, -1.0, -1.0]) if abs(a[0]) < 0.9 else np.diag([-1.0, -1.0, 1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return _EYE + k + k @ k / (1 + c)


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def box(size: tuple[float, float, float], center: tuple[float, float, float], R: np.ndarray = _EYE) -> _Prim:
    sx, sy, sz = size
    return "box", (sx, sy, sz), R, np.asarray(center, float), 2 * (sx * sy + sy * sz + sx * sz)


def frustum(r0: float, r1: float, h: float, base: tuple[float, float, float] = (0, 0, 0), R: np.ndarray = _EYE,
            cap0: bool = True, cap1: bool = True) -> _Prim:
    """Along local +Y from the base centre: radius r0 at y=0, r1 at y=h, optional end discs."""
    lateral = math.pi * (r0 + r1) * math.hypot(r1 - r0, h)
    area = lateral + cap0 * math.pi * r0**2 + cap1 * math.pi * r1**2
    return "frustum", (r0, r1, h, float(cap0), float(cap1)), R, np.asarray(base, float), area


def rod(p0: tuple[float, ...], p1: tuple[float, ...], r: float, r1: float | None = None, caps: bool = True) -> _Prim:
    p0a, p1a = np.asarray(p0, float), np.asarray(p1, float)
    d = p1a - p0a
    length = float(np.linalg.norm(d))
    return frustum(r, r if r1 is None else r1, length, p0a, _rot_between(np.array([0.0, 1, 0]), d / length),
                   caps, caps)


def ellipsoid(
    a: float, b: float, c: float, center: tuple[float, ...], R: np.ndarray = _EYE, hemi: bool = False
) -> _Prim:
    """Semi-axes a, b, c along local x, y, z; `hemi` keeps the y >= 0 half."""
    p = 1.6075
    area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
    return "ellipsoid", (a, b, c, float(hemi)), R, np.asarray(center, float), area / (2 if hemi else 1)


def torus(big_r: float, r: float, center: tuple[float, ...], R: np.ndarray = _EYE, phi0: float = 0.0,
          arc: float = 2 * math.pi) -> _Prim:
    """Ring of radius big_r in the local XY plane (axis z), tube radius r, angles [phi0, phi0 + arc]."""
    return "torus", (big_r, r, phi0, arc), R, np.asarray(center, float), arc * big_r * r * 2 * math.pi


def _sample_box(p: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    sx, sy, sz = p
    w = np.array([sy * sz, sx * sz, sx * sy])
    axis = rng.choice(3, size=n, p=w / w.sum())
    x = rng.uniform(-0.5, 0.5, size=(n, 3))
    x[np.arange(n), axis] = np.where(rng.random(n) < 0.5, -0.5, 0.5)
    return x * np.array([sx, sy, sz])


def _disc(r: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rho = r * np.sqrt(rng.random(n))
    th = rng.uniform(0, 2 * math.pi, n)
    return rho * np.cos(th), rho * np.sin(th)


def _sample_frustum(p: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    r0, r1, h, cap0, cap1 = p
    w = np.array([math.pi * (r0 + r1) * math.hypot(r1 - r0, h), cap0 * math.pi * r0**2, cap1 * math.pi * r1**2])
    part = rng.choice(3, size=n, p=w / w.sum())
    out = np.empty((n, 3))
    m = part == 0
    k = int(m.sum())
    u = rng.random(k)
    if abs(r1 - r0) < 1e-9:
        t = u
    else:  # density along the axis proportional to the radius
        t = (np.sqrt(r0**2 + u * (r1**2 - r0**2)) - r0) / (r1 - r0)
    rad = r0 + (r1 - r0) * t
    th = rng.uniform(0, 2 * math.pi, k)
    out[m] = np.stack([rad * np.cos(th), t * h, rad * np.sin(th)], axis=1)
    for cap, r, y in ((1, r0, 0.0), (2, r1, h)):
        m = part == cap
        x, z = _disc(r, int(m.sum()), rng)
        out[m] = np.stack([x, np.full_like(x, y), z], axis=1)
    return out


def _sample_ellipsoid(p: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    a, b, c, hemi = p
    wmax = max(a * b, b * c, a * c)
    got: list[np.ndarray] = []
    need = n
    while need > 0:  # rejection sampling on the sphere, weighted by the area element
        d = rng.normal(size=(2 * need + 16, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        w = np.sqrt((b * c * d[:, 0]) ** 2 + (a * c * d[:, 1]) ** 2 + (a * b * d[:, 2]) ** 2)
        d = d[rng.random(len(d)) * wmax < w][:need]
        got.append(d)
        need -= len(d)
    d = np.concatenate(got)
    if hemi:
        d[:, 1] = np.abs(d[:, 1])
    return d * np.array([a, b, c])


def _sample_torus(p: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    big_r, r, phi0, arc = p
    got: list[np.ndarray] = []
    need = n
    while need > 0:
        th = rng.uniform(0, 2 * math.pi, 2 * need + 16)
        th = th[rng.random(len(th)) * (big_r + r) < big_r + r * np.cos(th)][:need]
        got.append(th)
        need -= len(th)
    th = np.concatenate(got)
    phi = phi0 + arc * rng.random(n)
    ring = big_r + r * np.cos(th)
    return np.stack([ring * np.cos(phi), ring * np.sin(phi), r * np.sin(th)], axis=1)


_SAMPLERS: dict[str, Callable[[tuple[float, ...], int, np.random.Generator], np.ndarray]] = {
    "box": _sample_box, "frustum": _sample_frustum, "ellipsoid": _sample_ellipsoid, "torus": _sample_torus,
}

# --- categories ----------------------------------------------------------------------------------------------
# Each builder returns [(part name, primitive), ...]; Y is up, the floor is y = 0, the front is +Z.

_Parts = list[tuple[str, _Prim]]


def _legs(rng: np.random.Generator, w: float, d: float, top: float, inset: float, name: str = "leg") -> _Parts:
    round_legs = rng.random() < 0.5
    r = rng.uniform(0.03, 0.05)
    splay = rng.uniform(0.0, 0.06) if rng.random() < 0.4 else 0.0
    out: _Parts = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            x, z = sx * (w / 2 - inset), sz * (d / 2 - inset)
            if round_legs or splay:
                out.append((name, rod((x + sx * splay, 0, z + sz * splay), (x, top, z), r)))
            else:
                out.append((name, box((2 * r, top, 2 * r), (x, top / 2, z))))
    return out


def _chair(rng: np.random.Generator) -> _Parts:
    w, d = rng.uniform(0.8, 1.1), rng.uniform(0.8, 1.1)
    th, hs = rng.uniform(0.06, 0.12), rng.uniform(0.8, 1.0)
    parts: _Parts = [("seat", box((w, th, d), (0, hs - th / 2, 0)))]
    parts += _legs(rng, w, d, hs - th, 0.07)
    bh, bt = rng.uniform(0.7, 1.0), rng.uniform(0.05, 0.1)
    tilt = _rot("x", -rng.uniform(0.0, 0.25))
    base = np.array([0.0, hs, -d / 2 + bt / 2])
    if rng.random() < 0.4:  # slatted backrest: posts, slats and a top rail
        k = int(rng.integers(3, 6))
        for i in range(k):
            x = -w / 2 + 0.06 + i * (w - 0.12) / (k - 1)
            parts.append(("backrest", box((0.06, bh, bt), base + tilt @ np.array([x, bh / 2, 0]), tilt)))
        parts.append(("backrest", box((w, 0.15, bt * 1.2), base + tilt @ np.array([0, bh - 0.075, 0]), tilt)))
    else:
        parts.append(("backrest", box((w * rng.uniform(0.85, 1.0), bh, bt), base + tilt @ np.array([0, bh / 2, 0]),
                                      tilt)))
    if rng.random() < 0.5:
        ah = rng.uniform(0.2, 0.3)
        for sx in (-1, 1):
            x = sx * (w / 2 - 0.04)
            parts.append(("armrest", box((0.1, 0.05, d * 0.9), (x, hs + ah, 0.0))))
            parts.append(("armrest", box((0.06, ah, 0.06), (x, hs + ah / 2, d * 0.35))))
    return parts


def _table(rng: np.random.Generator) -> _Parts:
    h, th = rng.uniform(0.7, 1.0), rng.uniform(0.05, 0.1)
    if rng.random() < 0.35:  # round top
        r = rng.uniform(0.5, 0.8)
        parts: _Parts = [("tabletop", frustum(r, r, th, (0, h - th, 0)))]
        if rng.random() < 0.5:  # pedestal
            parts += [("leg", rod((0, 0.04, 0), (0, h - th, 0), rng.uniform(0.06, 0.1))),
                      ("leg", frustum(r * 0.6, r * 0.6, 0.04))]
        else:
            parts += _legs(rng, 1.2 * r, 1.2 * r, h - th, 0.05)
        return parts
    w, d = rng.uniform(1.2, 2.0), rng.uniform(0.7, 1.2)
    return [("tabletop", box((w, th, d), (0, h - th / 2, 0)))] + _legs(rng, w, d, h - th, rng.uniform(0.05, 0.15))


def _lamp(rng: np.random.Generator) -> _Parts:
    bh = rng.uniform(0.04, 0.1)
    if rng.random() < 0.6:
        parts: _Parts = [("base", frustum(rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.3), bh))]
    else:
        s = rng.uniform(0.35, 0.55)
        parts = [("base", box((s, bh, s), (0, bh / 2, 0)))]
    ph = rng.uniform(0.8, 1.4)
    parts.append(("pole", rod((0, bh, 0), (0, bh + ph, 0), rng.uniform(0.02, 0.035), caps=False)))
    top = bh + ph
    if rng.random() < 0.65:
        rb, rt, sh = rng.uniform(0.25, 0.4), rng.uniform(0.1, 0.25), rng.uniform(0.25, 0.4)
        parts.append(("lampshade", frustum(rb, rt, sh, (0, top - 0.6 * sh, 0), cap0=False, cap1=False)))
    else:  # dome shade, open side down
        r = rng.uniform(0.25, 0.38)
        parts.append(("lampshade", ellipsoid(r, r * rng.uniform(0.6, 1.0), r, (0, top - 0.1, 0), hemi=True)))
    return parts


def _mug(rng: np.random.Generator) -> _Parts:
    r, h = rng.uniform(0.3, 0.45), rng.uniform(0.7, 1.1)
    rt = r * rng.uniform(1.0, 1.15)
    big_r, tube = rng.uniform(0.2, 0.3) * h / 0.9, rng.uniform(0.045, 0.07)
    return [("body", frustum(r, rt, h, cap1=False)),
            ("handle", torus(big_r, tube, ((r + rt) / 2 - 0.02, h * rng.uniform(0.45, 0.55), 0), phi0=-math.pi / 2,
                             arc=math.pi))]


def _airplane(rng: np.random.Generator) -> _Parts:
    length, rad = rng.uniform(1.8, 2.4), rng.uniform(0.12, 0.18)
    parts: _Parts = [("fuselage", ellipsoid(rad, rad, length / 2, (0, 0, 0)))]
    span, chord = rng.uniform(0.8, 1.2), rng.uniform(0.25, 0.4)
    sweep, wy, wz = rng.uniform(0.0, 0.5), rng.choice([-0.6, 0.6]) * rad, rng.uniform(-0.05, 0.15) * length
    for sx in (-1, 1):
        R = _rot("y", -sx * sweep)
        parts.append(("wing", box((span, 0.03, chord), (sx * (rad * 0.5 + span / 2 * math.cos(sweep)), wy,
                                                        wz - span / 2 * math.sin(sweep)), R)))
    fin_h, tail_z = rng.uniform(0.3, 0.45), -length / 2 + 0.15
    parts.append(("tail", box((0.03, fin_h, 0.25), (0, rad * 0.5 + fin_h / 2, tail_z))))
    stab = rng.uniform(0.3, 0.4)
    for sx in (-1, 1):
        parts.append(("tail", box((stab, 0.025, 0.2), (sx * (stab / 2 + rad * 0.3), rad * 0.3, tail_z))))
    n_eng = 2 if rng.random() < 0.6 else 4
    er, el = rng.uniform(0.06, 0.09), rng.uniform(0.25, 0.35)
    offsets = [0.45] if n_eng == 2 else [0.3, 0.7]
    for sx in (-1, 1):
        for o in offsets:
            x = sx * (rad * 0.5 + o * span * math.cos(sweep))
            z = wz - o * span * math.sin(sweep) + chord * 0.3
            parts.append(("engine", rod((x, wy - er - 0.02, z - el / 2), (x, wy - er - 0.02, z + el / 2), er)))
    return parts


def _guitar(rng: np.random.Generator) -> _Parts:
    r1, t = rng.uniform(0.35, 0.45), rng.uniform(0.08, 0.12)
    r2, gap = r1 * rng.uniform(0.7, 0.85), r1 * rng.uniform(0.9, 1.1)
    flat = _rot("x", math.pi / 2)  # cylinder axis along z
    parts: _Parts = [("body", frustum(r1, r1, t, (0, 0, -t / 2), flat)),
                     ("body", frustum(r2, r2, t, (0, gap, -t / 2), flat))]
    nl, nw = rng.uniform(0.9, 1.2), rng.uniform(0.08, 0.1)
    y0 = gap + r2 * 0.8
    parts.append(("neck", box((nw, nl, 0.05), (0, y0 + nl / 2, t / 2))))
    hl, hw = rng.uniform(0.28, 0.35), rng.uniform(0.16, 0.2)
    R = _rot("x", -rng.uniform(0.1, 0.25))
    parts.append(("headstock", box((hw, hl, 0.04), np.array([0, y0 + nl, t / 2]) + R @ np.array([0, hl / 2, 0]), R)))
    return parts


def _car(rng: np.random.Generator) -> _Parts:
    length, width, h = rng.uniform(1.8, 2.2), rng.uniform(0.8, 0.95), rng.uniform(0.3, 0.45)
    wr, ww = rng.uniform(0.17, 0.22), rng.uniform(0.1, 0.15)
    y0 = wr * 0.6
    parts: _Parts = [("body", box((width, h, length), (0, y0 + h / 2, 0)))]
    rl, rh = length * rng.uniform(0.45, 0.6), rng.uniform(0.25, 0.35)
    parts.append(("roof", box((width * 0.9, rh, rl), (0, y0 + h + rh / 2, rng.uniform(-0.2, 0.0)))))
    axle = rng.uniform(0.55, 0.7) * length / 2
    side = _rot("z", math.pi / 2)
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(("wheel", frustum(wr, wr, ww, (sx * (width / 2 + (ww if sx > 0 else 0) - 0.02), wr, sz * axle),
                                           side)))
    return parts


def _rocket(rng: np.random.Generator) -> _Parts:
    r, h = rng.uniform(0.12, 0.2), rng.uniform(1.2, 1.8)
    parts: _Parts = [("body", frustum(r, r, h, cap1=False))]
    nh = rng.uniform(0.3, 0.5)
    if rng.random() < 0.5:
        parts.append(("nose", frustum(r, 0.0, nh, (0, h, 0), cap0=False, cap1=False)))
    else:
        parts.append(("nose", ellipsoid(r, nh, r, (0, h, 0), hemi=True)))
    k = 3 if rng.random() < 0.5 else 4
    fh, fs = rng.uniform(0.3, 0.5), rng.uniform(0.2, 0.3)
    for i in range(k):
        R = _rot("y", 2 * math.pi * i / k)
        parts.append(("fin", box((fs, fh, 0.03), R @ np.array([r + fs / 2, fh / 2, 0]), R)))
    return parts


def _bicycle(rng: np.random.Generator) -> _Parts:
    wr, tube = rng.uniform(0.33, 0.38), rng.uniform(0.025, 0.035)
    base = rng.uniform(0.95, 1.1)
    side = _rot("y", math.pi / 2)  # ring in the YZ plane
    rear, front = np.array([0, wr, -base / 2]), np.array([0, wr, base / 2])
    parts: _Parts = [("wheel", torus(wr, tube, tuple(rear), side)), ("wheel", torus(wr, tube, tuple(front), side))]
    ft = 0.025
    bb = np.array([0, wr * 0.9, -base * 0.05])
    seat_top = np.array([0, wr + rng.uniform(0.55, 0.7), -base * 0.2])
    head = np.array([0, wr + rng.uniform(0.5, 0.6), base * 0.33])
    for a, b in ((rear, bb), (rear, seat_top), (bb, seat_top), (bb, head), (seat_top, head), (front, head)):
        parts.append(("frame", rod(tuple(a), tuple(b), ft)))
    parts.append(("seat", ellipsoid(0.09, 0.045, 0.15, tuple(seat_top + np.array([0, 0.05, 0])))))
    bar_top = head + np.array([0, rng.uniform(0.1, 0.2), -0.03])
    parts.append(("frame", rod(tuple(head), tuple(bar_top), ft)))
    hw = rng.uniform(0.45, 0.6) / 2
    parts.append(("handlebar", rod(tuple(bar_top + [-hw, 0, 0]), tuple(bar_top + [hw, 0, 0]), 0.022)))
    for sx in (-1, 1):
        parts.append(("handlebar", rod(tuple(bar_top + [sx * hw, 0, 0]), tuple(bar_top + [sx * (hw - 0.12), 0, 0]),
                                       0.032)))
    return parts


def _skateboard(rng: np.random.Generator) -> _Parts:
    length, width, th = rng.uniform(0.75, 0.85), rng.uniform(0.2, 0.25), 0.02
    wr, y = rng.uniform(0.03, 0.04), rng.uniform(0.08, 0.1)
    parts: _Parts = [("deck", box((width, th, length), (0, y, 0)))]
    kick, tail = rng.uniform(0.1, 0.35), rng.uniform(0.1, 0.14)
    for sz in (-1, 1):
        R = _rot("x", -sz * kick)
        parts.append(("deck", box((width, th, tail), np.array([0, y, sz * length / 2]) + R @ [0, 0, sz * tail / 2], R)))
    side = _rot("z", math.pi / 2)
    for sx in (-1, 1):
        for sz in (-1, 1):
            x = sx * width / 2 + (0.04 if sx > 0 else 0.0)
            parts.append(("wheel", frustum(wr, wr, 0.04, (x, wr, sz * length * 0.35), side)))
    return parts


def _spout_and_handle(rng: np.random.Generator, rx: float, yc: float, h: float, handle_r: float) -> _Parts:
    elev = rng.uniform(0.6, 0.95)  # the spout leaves the body at -x, rising
    direction = np.array([-math.cos(elev), math.sin(elev), 0.0])
    spout = frustum(rng.uniform(0.09, 0.11), rng.uniform(0.045, 0.06), rng.uniform(0.35, 0.5),
                    (-rx * 0.85, yc - 0.05 * h, 0), _rot_between(np.array([0.0, 1, 0]), direction), cap0=False)
    handle = torus(handle_r, rng.uniform(0.035, 0.05), (rx * 0.9, yc, 0), phi0=-math.pi / 2, arc=math.pi)
    return [("spout", spout), ("handle", handle)]


def _teapot(rng: np.random.Generator) -> _Parts:
    a, b = rng.uniform(0.45, 0.55), rng.uniform(0.35, 0.45)
    parts: _Parts = [("body", ellipsoid(a, b, a, (0, b, 0)))]
    lr = rng.uniform(0.18, 0.25)
    parts.append(("lid", ellipsoid(lr, rng.uniform(0.08, 0.12), lr, (0, 2 * b - 0.03, 0), hemi=True)))
    parts.append(("lid", ellipsoid(0.05, 0.05, 0.05, (0, 2 * b + 0.08, 0))))
    parts += _spout_and_handle(rng, a, b, 2 * b, rng.uniform(0.2, 0.28))
    return parts


def _bottle(rng: np.random.Generator) -> _Parts:
    r, h = rng.uniform(0.2, 0.3), rng.uniform(0.6, 0.9)
    nr, nh, sh = rng.uniform(0.09, 0.12), rng.uniform(0.2, 0.3), rng.uniform(0.1, 0.2)
    ch = rng.uniform(0.08, 0.12)
    return [("body", frustum(r, r, h, cap1=False)), ("body", frustum(r, nr, sh, (0, h, 0), cap0=False, cap1=False)),
            ("neck", frustum(nr, nr, nh, (0, h + sh, 0), cap0=False, cap1=False)),
            ("cap", frustum(nr * 1.15, nr * 1.15, ch, (0, h + sh + nh, 0)))]


def _umbrella(rng: np.random.Generator) -> _Parts:
    shaft_len, sr = rng.uniform(1.0, 1.3), rng.uniform(0.025, 0.03)
    cr, chh = rng.uniform(0.6, 0.8), rng.uniform(0.25, 0.4)
    grip = rng.uniform(0.25, 0.35)
    parts: _Parts = [("shaft", rod((0, grip, 0), (0, grip + shaft_len, 0), sr, caps=False)),
                     ("canopy", frustum(cr, 0.03, chh, (0, grip + shaft_len - chh, 0), cap0=False))]
    parts.append(("handle", rod((0, 0, 0), (0, grip, 0), rng.uniform(0.045, 0.06))))
    if rng.random() < 0.5:  # J hook below the grip
        hr = rng.uniform(0.08, 0.12)
        parts.append(("handle", torus(hr, 0.035, (hr, 0, 0), phi0=math.pi, arc=math.pi)))
    return parts


def _bed(rng: np.random.Generator) -> _Parts:
    length, width = rng.uniform(1.9, 2.1), rng.uniform(1.0, 1.6)
    fh, mh, leg = rng.uniform(0.2, 0.3), rng.uniform(0.15, 0.25), rng.uniform(0.08, 0.15)
    parts: _Parts = [("frame", box((width, fh, length), (0, leg + fh / 2, 0)))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            corner = (sx * (width / 2 - 0.04), leg / 2, sz * (length / 2 - 0.04))
            parts.append(("frame", box((0.08, leg, 0.08), corner)))
    top = leg + fh
    parts.append(("mattress", box((width * 0.97, mh, length * 0.97), (0, top + mh / 2, 0))))
    hh = rng.uniform(0.5, 0.8)
    parts.append(("headboard", box((width, hh + top, 0.06), (0, (hh + top) / 2, -length / 2 - 0.03))))
    k = 1 if width < 1.25 else 2
    for i in range(k):
        x = 0.0 if k == 1 else (i - 0.5) * width / 2
        parts.append(("pillow", ellipsoid(min(0.35, width / (2 * k) - 0.04), 0.09, 0.2,
                                          (x, top + mh + 0.05, -length / 2 + 0.3))))
    return parts


def _stool(rng: np.random.Generator) -> _Parts:
    h, r = rng.uniform(0.6, 0.8), rng.uniform(0.2, 0.3)
    th = rng.uniform(0.04, 0.07)
    parts: _Parts = [("seat", frustum(r, r, th, (0, h - th, 0)))]
    k = 3 if rng.random() < 0.5 else 4
    lr, splay = rng.uniform(0.025, 0.04), rng.uniform(0.05, 0.15)
    for i in range(k):
        a = 2 * math.pi * i / k + math.pi / 4
        c, s = math.cos(a), math.sin(a)
        parts.append(("leg", rod(((r * 0.7 + splay) * c, 0, (r * 0.7 + splay) * s), (r * 0.7 * c, h - th, r * 0.7 * s),
                                 lr)))
    return parts


def _bench(rng: np.random.Generator) -> _Parts:
    length, d, h, th = rng.uniform(1.4, 2.0), rng.uniform(0.4, 0.55), rng.uniform(0.42, 0.5), rng.uniform(0.05, 0.08)
    parts: _Parts = [("seat", box((length, th, d), (0, h - th / 2, 0)))]
    if rng.random() < 0.5:  # panel legs
        for sx in (-1, 1):
            parts.append(("leg", box((0.06, h - th, d * 0.9), (sx * (length / 2 - 0.1), (h - th) / 2, 0))))
    else:
        parts += _legs(rng, length, d, h - th, 0.08)
    if rng.random() < 0.75:
        bh = rng.uniform(0.35, 0.5)
        k = int(rng.integers(2, 4))
        for i in range(k):
            y = h + 0.08 + (i + 0.5) * bh / k
            parts.append(("backrest", box((length, bh / k * 0.7, 0.04), (0, y, -d / 2 + 0.02))))
        for sx in (-1, 1):
            parts.append(("backrest", box((0.06, bh + 0.08, 0.05), (sx * (length / 2 - 0.1), h + (bh + 0.08) / 2,
                                                                    -d / 2 + 0.02))))
    return parts


def _jug(rng: np.random.Generator) -> _Parts:
    r, h = rng.uniform(0.3, 0.4), rng.uniform(0.8, 1.1)
    top = r * rng.uniform(0.6, 0.8)
    parts: _Parts = [("body", frustum(r, r, h * 0.6)), ("body", frustum(r, top, h * 0.4, (0, h * 0.6, 0),
                                                                             cap0=False, cap1=False))]
    parts += _spout_and_handle(rng, (r + top) / 2 + 0.05, h * 0.75, h, rng.uniform(0.2, 0.28))
    return parts


def _scooter(rng: np.random.Generator) -> _Parts:
    length, width, wr = rng.uniform(0.7, 0.9), rng.uniform(0.14, 0.18), rng.uniform(0.08, 0.11)
    y = wr * 1.2
    parts: _Parts = [("deck", box((width, 0.04, length), (0, y, 0)))]
    side = _rot("z", math.pi / 2)
    for z in (-length / 2 - wr * 0.6, length / 2 + wr * 0.6):
        parts.append(("wheel", frustum(wr, wr, 0.05, (0.025, wr, z), side)))
    ph = rng.uniform(0.75, 0.95)
    fz = length / 2 + wr * 0.6
    tz = fz - rng.uniform(0.0, 0.12)
    parts.append(("pole", rod((0, wr, fz), (0, wr + ph, tz), rng.uniform(0.025, 0.035))))
    hw = rng.uniform(0.22, 0.3)
    parts.append(("handlebar", rod((-hw, wr + ph, tz), (hw, wr + ph, tz), 0.025)))
    for sx in (-1, 1):
        parts.append(("handlebar", rod((sx * hw, wr + ph, tz), (sx * (hw - 0.1), wr + ph, tz), 0.035)))
    return parts


_BUILDERS: dict[str, Callable[[np.random.Generator], _Parts]] = {
    "chair": _chair, "table": _table, "lamp": _lamp, "mug": _mug, "airplane": _airplane, "guitar": _guitar,
    "car": _car, "rocket": _rocket, "bicycle": _bicycle, "skateboard": _skateboard, "teapot": _teapot,
    "bottle": _bottle, "umbrella": _umbrella, "bed": _bed, "stool": _stool, "bench": _bench, "jug": _jug,
    "scooter": _scooter,
}


def synthetic_shape(category: str, rng: np.random.Generator, num_points: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """One shape of `category`: `(points (N, 3) float32, labels (N,) int64)`, labels indexing
    `SYNTHETIC_PART_NAMES[category]`, points area-weighted on the surface, in random order, centred on their
    mean and scaled into the unit sphere.

    Examples:
        >>> import numpy as np
        >>> pts, lab = synthetic_shape("stool", np.random.default_rng(0), 256)
        >>> pts.shape, sorted(set(lab.tolist()))
        ((256, 3), [0, 1])
    """
    if category not in _BUILDERS:
        raise ValueError(f"category must be one of {sorted(_BUILDERS)}, got {category!r}")
    names = SYNTHETIC_PART_NAMES[category]
    parts = _BUILDERS[category](rng)
    areas = np.array([prim[4] for _, prim in parts])
    counts = rng.multinomial(num_points, areas / areas.sum())
    pts, labs = [], []
    for (name, (kind, params, R, t, _)), k in zip(parts, counts):
        if k == 0:
            continue
        pts.append(_SAMPLERS[kind](params, int(k), rng) @ np.asarray(R).T + t)
        labs.append(np.full(int(k), names.index(name), dtype=np.int64))
    points, labels = np.concatenate(pts), np.concatenate(labs)
    order = rng.permutation(num_points)
    points, labels = points[order], labels[order]
    points -= points.mean(axis=0)
    points /= np.linalg.norm(points, axis=1).max()
    return points.astype(np.float32), labels


def _categories(split: str) -> tuple[str, ...]:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
    return SYNTHETIC_HELDOUT_CATEGORIES if split == "heldout_categories" else SYNTHETIC_TRAIN_CATEGORIES


def generate_synthetic(
    num_shapes: int = 2000, *, seed: int = 0, split: str = "train", num_points: int = 2048
) -> dict[str, np.ndarray]:
    """Generate a split without caching: `points (S, N, 3)` float32, `labels (S, N)` int8 and `category (S,)`
    int16 (an index into the split's categories; shape `i` has category `i mod C`)."""
    cats = _categories(split)
    if num_shapes < 1 or num_points < 1:
        raise ValueError(f"num_shapes and num_points must be positive, got {num_shapes}, {num_points}")
    points = np.empty((num_shapes, num_points, 3), np.float32)
    labels = np.empty((num_shapes, num_points), np.int8)
    category = np.arange(num_shapes, dtype=np.int16) % len(cats)
    for i in range(num_shapes):
        rng = np.random.default_rng([int(seed), _SPLITS[split], i])
        points[i], labels[i] = synthetic_shape(cats[category[i]], rng, num_points)
    return {"points": points, "labels": labels, "category": category}


def _default_cache_dir() -> Path:
    env = os.environ.get("PA3D_CACHE")
    return Path(env) / "synthetic" if env else Path.home() / ".cache" / "pa3d" / "synthetic"


class SyntheticPartDataset(PartDataset):
    """The embedded part-annotated dataset that `make demo` trains on (no download).

    Args:
        num_shapes: S, how many shapes in the split.
        seed: generation seed (also the base seed of sampling and transforms).
        split: `"train"` (training categories), `"test"` (other shapes of the training categories) or
            `"heldout_categories"` (stool, bench, jug, scooter: parts named as in other categories).
        num_points: N, points per shape.
        cache_dir: folder of the on-disk cache (default `$PA3D_CACHE/synthetic` or `~/.cache/pa3d/synthetic`).
        cache: read and write the cache; the file name holds the generator version, split, seed and sizes,
            and is written atomically.
        sampler: callable `(sample, generator=None) -> PartSample` used instead of `num_points`.
        transform: callable `(sample, generator=None) -> PartSample` applied last.
        text_map: prompt text per raw label name, merged over the dataset's `TEXT_MAP`.

    Each item is a `PartSample` whose `label_names` list every part of its category
    (`SYNTHETIC_PART_NAMES`), `category` is the category name and `shape_id` is `"<split>_<i>"`.

    Examples:
        >>> ds = SyntheticPartDataset(4, num_points=128, cache=False)
        >>> s = ds[0]
        >>> s.points.shape, s.category, s.label_names
        (torch.Size([128, 3]), 'chair', ['seat', 'backrest', 'leg', 'armrest'])
    """

    def __init__(
        self,
        num_shapes: int = 2000,
        *,
        seed: int = 0,
        split: str = "train",
        num_points: int = 2048,
        cache_dir: str | Path | None = None,
        cache: bool = True,
        sampler: Callable[..., PartSample] | None = None,
        transform: Callable[..., PartSample] | None = None,
        text_map: dict[str, str] | None = None,
    ):
        super().__init__(sampler=sampler, transform=transform, seed=seed, text_map=text_map)
        self.categories = _categories(split)
        if not isinstance(num_shapes, int) or num_shapes < 1:
            raise ValueError(f"num_shapes must be a positive int, got {num_shapes!r}")
        if not isinstance(num_points, int) or num_points < 1:
            raise ValueError(f"num_points must be a positive int, got {num_points!r}")
        self.num_shapes, self.split, self.points_per_shape = num_shapes, split, num_points
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
        self.cache_path: Path | None = None
        self._data = self._load_or_generate(cache)

    @property
    def root(self) -> str:
        return f"synthetic:{self.split}"

    def _cache_file(self) -> Path:
        key = f"v{SYNTHETIC_VERSION}-{self.split}-seed{self.seed}-s{self.num_shapes}-n{self.points_per_shape}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        return self.cache_dir / f"synthetic-{key}-{digest}.npz"

    def _load_or_generate(self, cache: bool) -> dict[str, np.ndarray]:
        path = self._cache_file()
        if cache and path.exists():
            try:
                with np.load(path) as npz:
                    data = {k: npz[k] for k in ("points", "labels", "category")}
                if data["points"].shape == (self.num_shapes, self.points_per_shape, 3):
                    self.cache_path = path
                    return data
            except (OSError, ValueError, KeyError) as err:
                warnings.warn(f"ignoring unreadable synthetic cache {path}: {err}", stacklevel=3)
        data = generate_synthetic(self.num_shapes, seed=self.seed, split=self.split, num_points=self.points_per_shape)
        if cache:
            try:
                atomic_write_with(path, lambda fh: np.savez(fh, **data))
                self.cache_path = path
            except OSError as err:
                warnings.warn(f"could not write the synthetic cache to {path}: {err}", stacklevel=3)
        return data

    def __len__(self) -> int:
        return self.num_shapes

    def load(self, index: int) -> PartSample:
        cat = self.categories[int(self._data["category"][index])]
        return PartSample(
            torch.from_numpy(self._data["points"][index].copy()),
            torch.from_numpy(self._data["labels"][index].astype(np.int64)),
            SYNTHETIC_PART_NAMES[cat],
            cat,
            f"{self.split}_{index}",
            meta={"index": index},
        )
