#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Generate the small synthetic ``shacira-toy`` scene by analytic ray casting.

The scene is a procedurally textured object made of four intersecting analytic
primitives (a rotated box, a large sphere, a small sphere and a capped cylinder
"axle" through the box), centred at the origin well inside nerfstudio's Blender
scene box ``[-1.5, 1.5]^3``.  It is shaded with a fixed directional light plus
ambient term (Lambertian, with cast shadows), so the appearance does not depend
on the viewing direction.  Everything is vectorised numpy; only numpy and Pillow
are needed.

Two modes:

* Blender/NeRF mode (default)::

      python data/make_scene.py --output data/shacira-toy [--size 64] \
          [--n-train 40] [--n-val 8] [--n-test 8] [--seed 0]

  writes ``transforms_{train,val,test}.json`` and RGBA PNGs ``{split}/r_{i}.png``
  in the exact layout of the original NeRF synthetic (Blender) data sets, which
  nerfstudio's ``blender-data`` dataparser reads.  Background pixels have
  alpha 0 (RGB white), object pixels alpha 255, and edge pixels fractional
  alpha from 2x2 supersampling (straight, i.e. non-premultiplied, alpha).

* Photo mode::

      python data/make_scene.py --photos DIR [--n-photos 24] [--size 256]

  writes plain RGB "photos" (JPEG by default) of the same object standing on a
  textured ground plane inside a textured enclosing sphere, taken from cameras
  on a partial orbit, for structure-from-motion (COLMAP) tests.

Camera convention (both modes): OpenGL/Blender camera-to-world matrices; the
camera looks down its local -Z axis with +Y up and +X to the right; world up is
+Z.  Pixel ``(row v, col u)`` has its centre at ``(u + 0.5, v + 0.5)`` and the
principal point is the image centre, as in nerfstudio.

The output is deterministic: rerunning with the same arguments produces
byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Horizontal field of view of the Blender-mode cameras (the value used by the
# original NeRF "lego" scene).
CAMERA_ANGLE_X = 0.6911112070083618
# Wider field of view for the photo mode, so every photo sees plenty of
# textured background for feature matching.
PHOTO_CAMERA_ANGLE_X = 0.9
CAMERA_RADIUS = 4.0
# Direction *towards* the light (world frame, +Z up).
LIGHT_DIR = np.array([0.45, -0.35, 0.82])
LIGHT_DIR = LIGHT_DIR / np.linalg.norm(LIGHT_DIR)
AMBIENT = 0.45
DIFFUSE = 0.7
GROUND_Z = -0.6
INF = np.inf
EPS = 1e-6


# --------------------------------------------------------------------------- #
# Deterministic hashing / procedural colour helpers
# --------------------------------------------------------------------------- #
def _hash_u32(*ints: np.ndarray, seed: int = 0) -> np.ndarray:
    """Vectorised integer hash of any number of integer arrays -> uint32."""
    with np.errstate(over="ignore"):
        h = np.full(np.broadcast(*ints).shape, (0x9E3779B9 ^ (seed * 0x85EBCA6B)) & 0xFFFFFFFF, dtype=np.uint32)
        for k, x in enumerate(ints):
            x = np.asarray(x).astype(np.int64).astype(np.uint32)  # wraps negatives
            h = h ^ (x * np.uint32(0x27D4EB2F) + np.uint32(0x165667B1 + 0x1000193 * k))
            # murmur3 finaliser
            h ^= h >> np.uint32(16)
            h *= np.uint32(0x85EBCA6B)
            h ^= h >> np.uint32(13)
            h *= np.uint32(0xC2B2AE35)
            h ^= h >> np.uint32(16)
    return h


def _hash01(*ints: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hash -> float in [0, 1)."""
    return _hash_u32(*ints, seed=seed).astype(np.float64) / 4294967296.0


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs in [0, 1], output (..., 3)."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(np.int64) % 6
    f = h - np.floor(h)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def _hash_colour(*ints: np.ndarray, seed: int = 0, s_range=(0.55, 0.95), v_range=(0.45, 1.0)) -> np.ndarray:
    """Saturated random colour per integer cell."""
    h = _hash01(*ints, 1, seed=seed)
    s = s_range[0] + (s_range[1] - s_range[0]) * _hash01(*ints, 2, seed=seed)
    v = v_range[0] + (v_range[1] - v_range[0]) * _hash01(*ints, 3, seed=seed)
    return _hsv_to_rgb(h, s, v)


def _checker(*coords: np.ndarray) -> np.ndarray:
    """1.0 / 0.0 checkerboard on integer cells of the given float coordinates."""
    acc = np.zeros(np.broadcast(*coords).shape, dtype=np.int64)
    for c in coords:
        acc = acc + np.floor(c).astype(np.int64)
    return (acc % 2).astype(np.float64)


def _grid_lines(*coords_width) -> np.ndarray:
    """1.0 where any coordinate is within ``width`` of an integer line."""
    out = None
    for c, w in coords_width:
        fr = c - np.floor(c)
        m = (fr < w) | (fr > 1.0 - w)
        out = m if out is None else (out | m)
    return out.astype(np.float64)


# --------------------------------------------------------------------------- #
# Primitives.  Each has intersect(o, d) -> t (inf on miss), plus normal(p) and
# albedo(p) for hit points.  o, d are (N, 3) float64 arrays, d unit length.
# --------------------------------------------------------------------------- #
def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


class Sphere:
    def __init__(self, center, radius, rot, texture, seed, inside=False):
        self.c = np.asarray(center, dtype=np.float64)
        self.r = float(radius)
        self.rot = np.asarray(rot, dtype=np.float64)  # local -> world
        self.texture = texture
        self.seed = seed
        self.inside = inside  # seen from inside (enclosing backdrop sphere)

    def intersect(self, o, d):
        oc = o - self.c
        b = np.einsum("ij,ij->i", oc, d)
        cc = np.einsum("ij,ij->i", oc, oc) - self.r * self.r
        disc = b * b - cc
        ok = disc >= 0.0
        sq = np.sqrt(np.where(ok, disc, 0.0))
        t0 = -b - sq
        t1 = -b + sq
        if self.inside:
            t = np.where(ok & (t1 > EPS), t1, INF)
        else:
            t = np.where(ok & (t0 > EPS), t0, np.where(ok & (t1 > EPS), t1, INF))
        return t

    def normal(self, p):
        n = (p - self.c) / self.r
        return -n if self.inside else n

    def albedo(self, p):
        q = ((p - self.c) / self.r) @ self.rot  # local unit vector
        lon = np.arctan2(q[:, 1], q[:, 0]) / (2 * np.pi) + 0.5  # [0, 1)
        lat = np.arcsin(np.clip(q[:, 2], -1.0, 1.0)) / np.pi + 0.5  # [0, 1]
        if self.texture == "lonlat":
            # Rainbow latitude bands, each split into a checkerboard of a
            # colour and a random per-cell colour, plus thin dark meridians.
            nu, nv = 16, 8
            u, v = lon * nu, lat * nv
            iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
            band = _hsv_to_rgb(iv / nv, np.full_like(u, 0.85), np.full_like(u, 0.95))
            rnd = _hash_colour(iu, iv, seed=self.seed + 11)
            chk = _checker(u, v)[:, None]
            col = chk * band + (1 - chk) * rnd
            # finer sub-checker modulation in brightness
            fine = _checker(u * 2, v * 2)[:, None]
            col = col * (0.8 + 0.2 * fine)
            lines = _grid_lines((u, 0.06))[:, None]
            col = col * (1 - 0.75 * lines)
            return col
        if self.texture == "dots":
            # Polka dots on a yellow/blue 3-D checker; dot colours hashed.
            s = 3.0
            g = q * s
            cell = np.floor(g).astype(np.int64)
            fr = g - np.floor(g) - 0.5
            dot = (np.einsum("ij,ij->i", fr, fr) < 0.16)[:, None]
            base_chk = _checker(g[:, 0], g[:, 1], g[:, 2])[:, None]
            base = base_chk * np.array([0.98, 0.85, 0.15]) + (1 - base_chk) * np.array([0.15, 0.3, 0.85])
            dotc = _hash_colour(cell[:, 0], cell[:, 1], cell[:, 2], seed=self.seed + 23)
            return np.where(dot, dotc, base)
        if self.texture == "sky":
            # Backdrop: coloured blotches at two scales + latitude tint.
            c1 = _hash_colour(np.floor(lon * 48), np.floor(lat * 24), seed=self.seed + 31, v_range=(0.4, 1.0))
            c2 = _hash_colour(np.floor(lon * 144), np.floor(lat * 72), seed=self.seed + 37, s_range=(0.0, 0.6))
            chk = _checker(lon * 96, lat * 48)[:, None]
            col = 0.6 * c1 + 0.4 * c2
            col = col * (0.75 + 0.25 * chk)
            return col
        raise ValueError(self.texture)


class Box:
    def __init__(self, center, half, rot, seed):
        self.c = np.asarray(center, dtype=np.float64)
        self.h = np.asarray(half, dtype=np.float64)
        self.rot = np.asarray(rot, dtype=np.float64)  # local -> world
        self.seed = seed

    def _local(self, o, d):
        return (o - self.c) @ self.rot, d @ self.rot

    def intersect(self, o, d):
        ol, dl = self._local(o, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
            ta = (-self.h - ol) * inv
            tb = (self.h - ol) * inv
        tmin = np.max(np.minimum(ta, tb), axis=1)
        tmax = np.min(np.maximum(ta, tb), axis=1)
        hit = tmax >= np.maximum(tmin, EPS)
        t = np.where(tmin > EPS, tmin, tmax)
        return np.where(hit, t, INF)

    def _face(self, pl):
        ratio = np.abs(pl) / self.h
        ax = np.argmax(ratio, axis=1)
        sign = np.sign(pl[np.arange(len(pl)), ax])
        sign[sign == 0] = 1.0
        return ax, sign

    def normal(self, p):
        pl = (p - self.c) @ self.rot
        ax, sign = self._face(pl)
        nl = np.zeros_like(pl)
        nl[np.arange(len(pl)), ax] = sign
        return nl @ self.rot.T

    def albedo(self, p):
        pl = (p - self.c) @ self.rot
        ax, sign = self._face(pl)
        face = ax * 2 + (sign > 0)
        # 2-D face coordinates in units of the half-size
        ua = np.where(ax == 0, 1, 0)
        va = np.where(ax == 2, 1, 2)
        idx = np.arange(len(pl))
        u = pl[idx, ua] / self.h[ua] * 0.5 + 0.5  # [0, 1]
        v = pl[idx, va] / self.h[va] * 0.5 + 0.5
        n = 6 + face % 3  # different checker scale per face (6..8 cells)
        uu, vv = u * n, v * n
        iu, iv = np.floor(uu).astype(np.int64), np.floor(vv).astype(np.int64)
        col = _hash_colour(face, iu, iv, seed=self.seed + 41)
        # bright/dark checker modulation at twice the frequency
        fine = _checker(uu * 2, vv * 2)[:, None]
        col = col * (0.7 + 0.3 * fine)
        # a big face-specific diagonal stripe for large-scale recognisability
        stripe = (np.floor((u + v) * 3.0 + face) % 2 == 0)[:, None]
        col = np.where(stripe, col, 0.55 * col + 0.45 * np.array([1.0, 1.0, 1.0]))
        lines = _grid_lines((uu, 0.05), (vv, 0.05))[:, None]
        col = col * (1 - 0.8 * lines)
        return col


class Cylinder:
    """Capped cylinder with axis ``rot[:, 2]`` (local +Z), radius r, half-length L."""

    def __init__(self, center, radius, half_len, rot, seed):
        self.c = np.asarray(center, dtype=np.float64)
        self.r = float(radius)
        self.L = float(half_len)
        self.rot = np.asarray(rot, dtype=np.float64)
        self.seed = seed

    def intersect(self, o, d):
        ol = (o - self.c) @ self.rot
        dl = d @ self.rot
        # side
        a = dl[:, 0] ** 2 + dl[:, 1] ** 2
        b = ol[:, 0] * dl[:, 0] + ol[:, 1] * dl[:, 1]
        cc = ol[:, 0] ** 2 + ol[:, 1] ** 2 - self.r**2
        disc = b * b - a * cc
        ok = (disc >= 0) & (a > 1e-12)
        sq = np.sqrt(np.where(ok, disc, 0.0))
        a_safe = np.where(a > 1e-12, a, 1.0)
        t_side = INF * np.ones(len(o))
        for sgn in (1.0, -1.0):  # try far root first, near root overrides
            tt = (-b + sgn * sq) / a_safe
            z = ol[:, 2] + tt * dl[:, 2]
            good = ok & (tt > EPS) & (np.abs(z) <= self.L)
            t_side = np.where(good & (tt < t_side), tt, t_side)
        # caps
        t_cap = INF * np.ones(len(o))
        dz = np.where(np.abs(dl[:, 2]) < 1e-12, 1e-12, dl[:, 2])
        for zc in (-self.L, self.L):
            tt = (zc - ol[:, 2]) / dz
            x = ol[:, 0] + tt * dl[:, 0]
            y = ol[:, 1] + tt * dl[:, 1]
            good = (tt > EPS) & (x * x + y * y <= self.r**2)
            t_cap = np.where(good & (tt < t_cap), tt, t_cap)
        return np.minimum(t_side, t_cap)

    def _classify(self, pl):
        radial = np.sqrt(pl[:, 0] ** 2 + pl[:, 1] ** 2)
        on_cap = (self.L - np.abs(pl[:, 2])) < (self.r - radial)
        return on_cap, radial

    def normal(self, p):
        pl = (p - self.c) @ self.rot
        on_cap, radial = self._classify(pl)
        nl = np.zeros_like(pl)
        rs = np.maximum(radial, 1e-12)
        nl[:, 0] = np.where(on_cap, 0.0, pl[:, 0] / rs)
        nl[:, 1] = np.where(on_cap, 0.0, pl[:, 1] / rs)
        nl[:, 2] = np.where(on_cap, np.sign(pl[:, 2]), 0.0)
        return nl @ self.rot.T

    def albedo(self, p):
        pl = (p - self.c) @ self.rot
        on_cap, radial = self._classify(pl)
        theta = np.arctan2(pl[:, 1], pl[:, 0]) / (2 * np.pi) + 0.5
        s = pl[:, 2] / self.L  # [-1, 1]
        # helical rainbow stripes on the side
        k = theta * 12 + s * 6
        stripe = np.floor(k).astype(np.int64)
        side = _hsv_to_rgb((stripe % 7) / 7.0, np.full_like(k, 0.9), np.full_like(k, 0.95))
        rings = _checker(s * 10)[:, None]  # rings along the axis
        side = side * (0.6 + 0.4 * rings)
        # caps: sectors x concentric rings with hashed colours
        sec = np.floor(theta * 10).astype(np.int64)
        ring = np.floor(radial / self.r * 3).astype(np.int64)
        cap = _hash_colour(sec, ring, (pl[:, 2] > 0).astype(np.int64), seed=self.seed + 53)
        return np.where(on_cap[:, None], cap, side)


class Ground:
    """Textured horizontal disc at z = z0 (photo mode only)."""

    def __init__(self, z0, radius, seed):
        self.z0 = float(z0)
        self.R = float(radius)
        self.seed = seed

    def intersect(self, o, d):
        dz = np.where(np.abs(d[:, 2]) < 1e-12, -1e-12, d[:, 2])
        t = (self.z0 - o[:, 2]) / dz
        x = o[:, 0] + t * d[:, 0]
        y = o[:, 1] + t * d[:, 1]
        good = (t > EPS) & (x * x + y * y <= self.R**2)
        return np.where(good, t, INF)

    def normal(self, p):
        n = np.zeros_like(p)
        n[:, 2] = 1.0
        return n

    def albedo(self, p):
        x, y = p[:, 0], p[:, 1]
        # large random-coloured tiles (0.5 units) ...
        tile = _hash_colour(np.floor(x * 2), np.floor(y * 2), seed=self.seed + 61, v_range=(0.5, 1.0))
        # ... mixed with smaller random greyish cells (0.125 units)
        small = _hash_colour(np.floor(x * 8), np.floor(y * 8), seed=self.seed + 67, s_range=(0.0, 0.5))
        col = 0.65 * tile + 0.35 * small
        fine = _checker(x * 16, y * 16)[:, None]
        col = col * (0.8 + 0.2 * fine)
        lines = _grid_lines((x * 2, 0.04), (y * 2, 0.04))[:, None]
        return col * (1 - 0.7 * lines)


# --------------------------------------------------------------------------- #
# Scene
# --------------------------------------------------------------------------- #
def build_object(seed: int):
    """The object: all primitives lie inside [-1.2, 1.2]^3."""
    box_rot = _rot_z(math.radians(30.0))
    return [
        Box(center=(0.0, 0.0, -0.1), half=(0.5, 0.5, 0.5), rot=box_rot, seed=seed),
        Sphere(center=(0.3, -0.3, 0.45), radius=0.5, rot=_rot_z(0.4) @ _rot_x(0.3), texture="lonlat", seed=seed),
        Sphere(center=(-0.55, 0.45, 0.45), radius=0.28, rot=np.eye(3), texture="dots", seed=seed),
        # axle through the box along the box's local x axis, tilted up a bit
        Cylinder(
            center=(0.0, 0.0, -0.15),
            radius=0.2,
            half_len=1.0,
            rot=box_rot @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
            seed=seed,
        ),
    ]


def build_backdrop(seed: int):
    return [Ground(GROUND_Z, 9.9, seed), Sphere((0.0, 0.0, 0.0), 10.0, np.eye(3), "sky", seed, inside=True)]


def _first_hit(prims, o, d):
    t_best = np.full(len(o), INF)
    idx = np.full(len(o), -1, dtype=np.int64)
    for k, prim in enumerate(prims):
        t = prim.intersect(o, d)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        idx = np.where(closer, k, idx)
    return t_best, idx


def shade(o, d, obj, backdrop):
    """Trace rays; returns (rgb (N,3), hit_object (N,) bool)."""
    prims = obj + backdrop
    t, idx = _first_hit(prims, o, d)
    n_obj = len(obj)
    rgb = np.ones((len(o), 3))
    hit = idx >= 0
    hit_obj = (idx >= 0) & (idx < n_obj)
    p = o + d * np.where(hit, t, 0.0)[:, None]
    normals = np.zeros_like(p)
    albedo = np.ones_like(p)
    for k, prim in enumerate(prims):
        m = idx == k
        if not np.any(m):
            continue
        normals[m] = prim.normal(p[m])
        albedo[m] = prim.albedo(p[m])
    lit = hit & (idx < n_obj + (1 if backdrop else 0))  # object and ground are lit
    # Flip normals to face the viewer (only matters for grazing/inside cases).
    facing = np.einsum("ij,ij->i", normals, d) > 0
    normals[facing & lit] *= -1.0
    ndl = np.clip(normals @ LIGHT_DIR, 0.0, None)
    # Shadow rays (cast only by the object).
    need = lit & (ndl > 0)
    shadow = np.ones(len(o))
    if np.any(need):
        so = p[need] + normals[need] * 1e-4
        sd = np.broadcast_to(LIGHT_DIR, so.shape).copy()
        st, _ = _first_hit(obj, so, sd)
        shadow[need] = np.where(np.isfinite(st), 0.0, 1.0)
    intensity = np.where(lit, AMBIENT + DIFFUSE * ndl * shadow, 0.95)
    rgb = np.where(hit[:, None], albedo * intensity[:, None], rgb)
    return np.clip(rgb, 0.0, 1.0), hit_obj


# --------------------------------------------------------------------------- #
# Cameras
# --------------------------------------------------------------------------- #
def look_at_c2w(position, target=(0.0, 0.0, 0.0), world_up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL/Blender camera-to-world matrix (camera looks down -Z, +Y up)."""
    pos = np.asarray(position, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - pos
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(world_up, dtype=np.float64))
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = up
    c2w[:3, 2] = -fwd
    c2w[:3, 3] = pos
    return c2w


def sph_to_cart(radius, azimuth, elevation):
    return radius * np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )


def train_poses(n: int, seed: int, radius: float = CAMERA_RADIUS):
    """Golden-angle spiral, uniform in area between -15 deg and +75 deg elevation."""
    rng = np.random.default_rng(seed)
    az0 = rng.uniform(0.0, 2 * math.pi)
    zmin, zmax = math.sin(math.radians(-15.0)), math.sin(math.radians(75.0))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    poses = []
    for i in range(n):
        z = zmin + (zmax - zmin) * (i + 0.5) / n
        poses.append(look_at_c2w(sph_to_cart(radius, az0 + i * golden, math.asin(z))))
    return poses


def val_poses(n: int, seed: int, radius: float = CAMERA_RADIUS):
    """Random views between +5 and +60 deg elevation (seeded)."""
    rng = np.random.default_rng(seed + 1000)
    az = rng.uniform(0.0, 2 * math.pi, size=n)
    el = np.radians(rng.uniform(5.0, 60.0, size=n))
    return [look_at_c2w(sph_to_cart(radius, a, e)) for a, e in zip(az, el)]


def test_poses(n: int, radius: float = CAMERA_RADIUS):
    """Evenly spaced orbit at 30 deg elevation (like the NeRF synthetic test sets)."""
    return [look_at_c2w(sph_to_cart(radius, 2 * math.pi * (i + 0.5) / max(n, 1), math.radians(30.0))) for i in range(n)]


def photo_poses(n: int, radius: float = 3.6):
    """Partial orbit (200 deg of azimuth) with gently varying elevation."""
    poses = []
    for i in range(n):
        f = i / max(n - 1, 1)
        az = math.radians(-100.0 + 200.0 * f)
        el = math.radians(22.0 + 10.0 * math.sin(2 * math.pi * f * 1.5))
        poses.append(look_at_c2w(sph_to_cart(radius, az, el), target=(0.0, 0.0, -0.1)))
    return poses


def camera_rays(c2w: np.ndarray, size: int, camera_angle_x: float, ss: int):
    """Rays through ss x ss stratified sub-pixel positions; shape (H*W*ss*ss, 3)."""
    w = h = size
    focal = 0.5 * w / math.tan(0.5 * camera_angle_x)
    offs = (np.arange(ss) + 0.5) / ss
    u = (np.arange(w)[:, None] + offs[None, :]).reshape(-1)  # (W*ss,)
    v = (np.arange(h)[:, None] + offs[None, :]).reshape(-1)
    uu, vv = np.meshgrid(u, v, indexing="xy")  # (H*ss, W*ss)
    dirs_cam = np.stack([(uu - 0.5 * w) / focal, -(vv - 0.5 * h) / focal, -np.ones_like(uu)], axis=-1)
    dirs = dirs_cam.reshape(-1, 3) @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
    return origins, dirs


def render(c2w, size, camera_angle_x, obj, backdrop, ss=2):
    """Returns (rgb (H,W,3) float, alpha (H,W) float) with straight alpha."""
    o, d = camera_rays(c2w, size, camera_angle_x, ss)
    rgb, hit = shade(o, d, obj, backdrop)
    rgb = rgb.reshape(size, ss, size, ss, 3)
    hit = hit.reshape(size, ss, size, ss).astype(np.float64)
    if backdrop:
        return rgb.mean(axis=(1, 3)), np.ones((size, size))
    n_hit = hit.sum(axis=(1, 3))
    col = (rgb * hit[..., None]).sum(axis=(1, 3)) / np.maximum(n_hit, 1)[..., None]
    col = np.where(n_hit[..., None] > 0, col, 1.0)  # white background RGB
    return col, n_hit / (ss * ss)


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- #
# Writers
# --------------------------------------------------------------------------- #
def write_blender(out: Path, size: int, n_train: int, n_val: int, n_test: int, seed: int, ss: int) -> dict:
    obj = build_object(seed)
    splits = {
        "train": train_poses(n_train, seed),
        "val": val_poses(n_val, seed),
        "test": test_poses(n_test),
    }
    out.mkdir(parents=True, exist_ok=True)
    coverage = {}
    for split, poses in splits.items():
        (out / split).mkdir(exist_ok=True)
        frames = []
        cov = []
        for i, c2w in enumerate(poses):
            rgb, alpha = render(c2w, size, CAMERA_ANGLE_X, obj, [], ss=ss)
            rgba = np.concatenate([to_u8(rgb), to_u8(alpha)[..., None]], axis=-1)
            Image.fromarray(rgba).save(out / split / f"r_{i}.png", optimize=True)
            cov.append(float(alpha.mean()))
            frames.append(
                {
                    "file_path": f"./{split}/r_{i}",
                    "rotation": 0.0,
                    "transform_matrix": [[round(float(x), 10) for x in row] for row in c2w],
                }
            )
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "frames": frames}
        with open(out / f"transforms_{split}.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        coverage[split] = cov
    return coverage


def write_photos(out: Path, n: int, size: int, seed: int, ss: int, fmt: str, gt_poses: bool) -> None:
    obj = build_object(seed)
    backdrop = build_backdrop(seed)
    out.mkdir(parents=True, exist_ok=True)
    ext = "jpg" if fmt == "jpg" else "png"
    poses = photo_poses(n)
    for i, c2w in enumerate(poses):
        rgb, _ = render(c2w, size, PHOTO_CAMERA_ANGLE_X, obj, backdrop, ss=ss)
        img = Image.fromarray(to_u8(rgb))
        path = out / f"photo_{i:03d}.{ext}"
        if ext == "jpg":
            img.save(path, quality=95, subsampling=0)
        else:
            img.save(path, optimize=True)
    if gt_poses:
        meta = {
            "camera_angle_x": PHOTO_CAMERA_ANGLE_X,
            "convention": "OpenGL camera-to-world, world +Z up",
            "frames": [
                {"file_path": f"photo_{i:03d}.{ext}", "transform_matrix": c2w.tolist()} for i, c2w in enumerate(poses)
            ],
        }
        with open(out / "gt_poses.json", "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--output", type=Path, help="write a Blender-format NeRF scene to this directory")
    mode.add_argument("--photos", type=Path, help="write plain RGB photos (for COLMAP) to this directory")
    ap.add_argument("--size", type=int, default=None, help="image width = height (default 64, or 256 for --photos)")
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=8)
    ap.add_argument("--n-photos", type=int, default=24)
    ap.add_argument("--photo-format", choices=["jpg", "png"], default="jpg")
    ap.add_argument("--gt-poses", action="store_true", help="photo mode: also write gt_poses.json")
    ap.add_argument("--supersample", type=int, default=2, help="ss x ss samples per pixel (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    if args.output is not None:
        size = args.size or 64
        cov = write_blender(args.output, size, args.n_train, args.n_val, args.n_test, args.seed, args.supersample)
        for split, c in cov.items():
            if c:
                print(
                    f"{split}: {len(c)} views, object coverage min {min(c):.2f} mean {np.mean(c):.2f} max {max(c):.2f}"
                )
        where = args.output
    else:
        size = args.size or 256
        write_photos(args.photos, args.n_photos, size, args.seed, args.supersample, args.photo_format, args.gt_poses)
        where = args.photos
    print(f"wrote {where} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
