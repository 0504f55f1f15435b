"""Procedural top-down aerial scene generator: the embedded synthetic benchmark of drseg.

A scene is drawn in layers, each one writing the exact concept id of every pixel it covers:

    ground parcels (low vegetation, bare soil, field, sand, pavement)
    -> water (lake / river / coast, sand beach) -> roads with markings -> parking lots
    -> sport courts -> buildings (several roof colours and shapes) -> trees -> cars
    -> ships -> clutter -> cast shadows (image only) -> domain look (tint, haze, noise, blur)

Shadows change the image but never the mask: a road in the shadow of a building is still road,
as in the real benchmarks. Everything random comes from the ``numpy.random.Generator`` passed
in, so the same generator state gives byte-identical images and masks.

A :class:`Domain` sets what varies between datasets: the ground sampling distance (object scale
in pixels), palette and roof colours, illumination (brightness, gamma, tint, haze, sun
direction and elevation for shadows), sensor noise and blur, and how often each concept
appears. :data:`DOMAINS` holds the named domains of the synthetic suite plus a few extra ones
for caption pretraining; :func:`sample_domain` draws random domains.

Public API: ``CONCEPTS``, ``CONCEPT_ID``, ``DISPLAY_COLORS``, ``Domain``, ``DOMAINS``,
``render_scene``, ``sample_domain``, ``concepts_present``, ``colorize``.
"""
from __future__ import annotations

import math
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from drseg.data.catalog import SYNTH

#: Canonical concept names; a scene mask holds indices into this tuple.
CONCEPTS: tuple[str, ...] = (
    "building",
    "road",
    "tree",
    "low_vegetation",
    "bare_soil",
    "water",
    "car",
    "ship",
    "court",
    "pavement",
    "clutter",
    "sand",
    "field",
)
CONCEPT_ID: dict[str, int] = {c: i for i, c in enumerate(CONCEPTS)}

#: Colours for colourised masks (figures), one per concept.
DISPLAY_COLORS: dict[str, tuple[int, int, int]] = {
    "building": (220, 40, 40),
    "road": (128, 64, 128),
    "tree": (20, 110, 20),
    "low_vegetation": (140, 220, 90),
    "bare_soil": (170, 120, 60),
    "water": (30, 90, 230),
    "car": (255, 220, 0),
    "ship": (255, 120, 200),
    "court": (0, 210, 210),
    "pavement": (190, 190, 190),
    "clutter": (255, 140, 0),
    "sand": (240, 220, 150),
    "field": (200, 200, 40),
}

# Surface colours under neutral light (RGB). Domains may override them (``Domain.palette``).
_BASE_COLORS: dict[str, tuple[int, int, int]] = {
    "road": (92, 92, 96),
    "tree": (46, 82, 42),
    "low_vegetation": (104, 134, 70),
    "bare_soil": (148, 118, 88),
    "water": (38, 72, 96),
    "pavement": (152, 150, 143),
    "sand": (206, 192, 150),
    "field": (132, 146, 78),
}
_FIELD_COLORS = ((150, 160, 80), (190, 175, 100), (110, 140, 60), (160, 130, 90), (90, 120, 55))
_CAR_COLORS = ((230, 230, 230), (30, 30, 34), (160, 162, 168), (170, 30, 30), (40, 60, 140),
               (90, 90, 95), (200, 180, 60))
_COURT_COLORS = ((60, 130, 80), (50, 90, 160), (180, 90, 60), (150, 50, 50), (70, 140, 150))
_HULL_COLORS = ((235, 235, 235), (200, 60, 50), (60, 70, 90), (210, 210, 200), (40, 90, 150))
_CLUTTER_COLORS = ((200, 70, 40), (40, 120, 170), (210, 180, 40), (120, 120, 125),
                   (90, 60, 40), (230, 230, 230))

_GROUND = ("low_vegetation", "bare_soil", "field", "sand", "pavement")


@dataclass(frozen=True)
class Domain:
    """What varies between synthetic datasets (sensor, place, season, light).

    Args:
        name: short identifier.
        gsd: ground sampling distance in metres per pixel; objects are drawn at
            ``size_in_metres / gsd`` pixels (smaller gsd = larger objects).
        weights: ``(concept, weight)`` pairs; how often / how much each concept appears.
            Ground concepts (low_vegetation, bare_soil, field, sand, pavement) share the
            ground parcels in proportion to their weights; for objects the weight scales the
            probability or density (0 = never drawn, ~1 = typical, up to ~2 = dense).
        parcel_m: typical ground parcel size in metres.
        tint: per-channel gain (white balance / palette shift).
        saturation: colour saturation factor (1 = unchanged).
        brightness: overall gain.
        gamma: tone curve exponent (>1 darker mid-tones).
        haze: 0..1 blend toward ``haze_color`` (atmospheric haze).
        haze_color: RGB of the haze.
        sun_azimuth: direction shadows fall toward, degrees in image coordinates
            (0 = +x / right, 90 = +y / down).
        sun_elevation: sun elevation in degrees; shadow length = height / tan(elevation).
        shadow_strength: 0..1 darkening inside cast shadows.
        noise: sensor noise standard deviation in digital numbers.
        blur: Gaussian blur sigma in pixels (optics / resampling).
        roof_colors: roof colours buildings draw from.
        grid_angle: road grid orientation in degrees; None = random per scene.
        palette: ``(concept, rgb)`` overrides of the base surface colours.
        building_height: (min, max) building height in metres.
    """

    name: str
    gsd: float = 0.6
    weights: tuple[tuple[str, float], ...] = ()
    parcel_m: float = 40.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    saturation: float = 1.0
    brightness: float = 1.0
    gamma: float = 1.0
    haze: float = 0.0
    haze_color: tuple[int, int, int] = (200, 205, 215)
    sun_azimuth: float = 60.0
    sun_elevation: float = 50.0
    shadow_strength: float = 0.55
    noise: float = 3.0
    blur: float = 0.5
    roof_colors: tuple[tuple[int, int, int], ...] = (
        (168, 72, 52), (88, 88, 92), (182, 180, 172), (222, 220, 212), (96, 112, 130),
        (124, 86, 62))
    grid_angle: float | None = 0.0
    palette: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    building_height: tuple[float, float] = (4.0, 14.0)

    def __post_init__(self) -> None:
        for c, w in self.weights:
            if c not in CONCEPT_ID:
                raise ValueError(f"Domain {self.name!r}: unknown concept {c!r} in weights")
            if w < 0:
                raise ValueError(f"Domain {self.name!r}: negative weight for {c!r}")
        if self.gsd <= 0:
            raise ValueError(f"Domain {self.name!r}: gsd must be > 0, got {self.gsd}")

    def weight(self, concept: str) -> float:
        """Frequency weight of ``concept`` (0 when not listed)."""
        return dict(self.weights).get(concept, 0.0)

    def color(self, concept: str) -> np.ndarray:
        """Base surface colour of ``concept`` in this domain, float32 (3,)."""
        return np.asarray(dict(self.palette).get(concept, _BASE_COLORS[concept]), np.float32)


def _w(**kw: float) -> tuple[tuple[str, float], ...]:
    return tuple(kw.items())


#: Named domains. The first four make the synthetic suite (see drseg.data.catalog); the rest
#: add variety for caption pretraining. Ships and courts never appear in "source".
DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        # DLRSD-like source: suburban, neutral light, mid resolution; no ships, no courts.
        Domain(
            name="source", gsd=0.6, parcel_m=40.0,
            weights=_w(building=1.0, road=0.8, tree=1.0, low_vegetation=1.0, bare_soil=0.5,
                       water=0.35, car=1.0, pavement=0.4, clutter=0.5, sand=0.15, field=0.4),
        ),
        # Potsdam-like: dense city, fine resolution, warm light, long shadows.
        Domain(
            name="urban", gsd=0.35, parcel_m=30.0,
            weights=_w(building=1.6, road=1.0, tree=0.8, low_vegetation=1.0, bare_soil=0.2,
                       water=0.1, car=1.6, court=0.5, pavement=0.9, clutter=1.0),
            tint=(1.08, 1.0, 0.88), saturation=0.85, brightness=1.05, sun_azimuth=20.0,
            sun_elevation=32.0, noise=2.5, blur=0.6, grid_angle=None,
            roof_colors=((190, 90, 60), (150, 60, 45), (205, 200, 190), (70, 70, 74),
                         (110, 100, 95)),
            building_height=(8.0, 22.0),
        ),
        # LoveDA-like: rural, coarse resolution, hazy, greener, fields.
        Domain(
            name="rural", gsd=1.1, parcel_m=70.0,
            weights=_w(building=0.6, road=0.6, tree=1.2, low_vegetation=0.8, bare_soil=0.8,
                       water=0.45, car=0.4, court=0.3, pavement=0.15, clutter=0.3,
                       field=2.0),
            tint=(0.92, 1.05, 1.0), saturation=1.2, brightness=0.95, gamma=1.1, haze=0.25,
            haze_color=(190, 200, 205), sun_azimuth=120.0, sun_elevation=60.0, noise=4.0,
            blur=0.8, grid_angle=None,
            roof_colors=((140, 150, 160), (200, 205, 210), (160, 80, 60), (90, 100, 120)),
            palette=(("low_vegetation", (92, 130, 62)), ("bare_soil", (160, 128, 96))),
        ),
        # Harbour / coast: ships, sand, blue cast, low sun.
        Domain(
            name="harbor", gsd=0.8, parcel_m=50.0,
            weights=_w(building=0.8, road=0.7, tree=0.4, low_vegetation=0.5, bare_soil=0.6,
                       water=1.6, car=0.8, ship=1.6, court=0.3, pavement=1.2, clutter=1.4,
                       sand=1.0),
            tint=(0.9, 0.98, 1.12), saturation=0.9, brightness=1.08, haze=0.1,
            sun_azimuth=300.0, sun_elevation=38.0, noise=3.5, blur=0.5, grid_angle=15.0,
            palette=(("water", (30, 80, 112)), ("pavement", (170, 168, 160))),
        ),
        # Extra domains (pretraining variety, not in the suite by default).
        Domain(
            name="desert", gsd=0.9, parcel_m=60.0,
            weights=_w(building=0.7, road=0.6, tree=0.2, low_vegetation=0.2, bare_soil=1.0,
                       water=0.1, car=0.6, court=0.2, pavement=0.4, clutter=0.6, sand=1.6),
            tint=(1.1, 1.02, 0.9), brightness=1.12, sun_azimuth=200.0, sun_elevation=70.0,
            roof_colors=((220, 210, 190), (200, 180, 150), (170, 150, 120)),
        ),
        Domain(
            name="dusk", gsd=0.5, parcel_m=35.0,
            weights=_w(building=1.2, road=1.0, tree=0.8, low_vegetation=0.8, bare_soil=0.3,
                       water=0.3, car=1.2, court=0.4, pavement=0.6, clutter=0.6),
            tint=(1.15, 0.95, 0.85), brightness=0.7, gamma=1.2, sun_azimuth=170.0,
            sun_elevation=18.0, shadow_strength=0.6, noise=5.0, grid_angle=None,
        ),
        Domain(
            name="winter", gsd=0.7, parcel_m=45.0,
            weights=_w(building=0.9, road=0.8, tree=0.9, low_vegetation=0.6, bare_soil=0.9,
                       water=0.4, car=0.8, pavement=0.4, clutter=0.4, field=0.8),
            tint=(0.95, 0.98, 1.08), saturation=0.55, brightness=1.0, haze=0.15,
            haze_color=(225, 228, 235), sun_azimuth=90.0, sun_elevation=22.0,
            palette=(("low_vegetation", (120, 125, 100)), ("tree", (50, 60, 50))),
        ),
    )
}


def sample_domain(rng: np.random.Generator, name: str = "random",
                  base: Domain | None = None) -> Domain:
    """Draw a random domain (for pretraining corpora): jitter of ``base`` (default: a random
    named domain) in scale, light, palette and concept weights.

    Args:
        rng: random generator.
        name: name of the new domain.
        base: domain to jitter; None picks one of :data:`DOMAINS` at random.
    """
    if base is None:
        keys = sorted(DOMAINS)
        base = DOMAINS[keys[int(rng.integers(len(keys)))]]
    weights = tuple((c, float(w * rng.uniform(0.5, 1.5))) for c, w in base.weights)
    return replace(
        base,
        name=name,
        gsd=float(base.gsd * rng.uniform(0.7, 1.4)),
        weights=weights,
        tint=tuple(float(t * rng.uniform(0.9, 1.1)) for t in base.tint),
        saturation=float(base.saturation * rng.uniform(0.8, 1.2)),
        brightness=float(base.brightness * rng.uniform(0.85, 1.15)),
        haze=float(np.clip(base.haze + rng.uniform(-0.05, 0.2), 0.0, 0.6)),
        sun_azimuth=float(rng.uniform(0.0, 360.0)),
        sun_elevation=float(rng.uniform(20.0, 70.0)),
        grid_angle=None if rng.random() < 0.5 else float(rng.uniform(0.0, 90.0)),
    )


# --------------------------------------------------------------------------- geometry helpers
def _window(cx: float, cy: float, r: float, size: int) -> tuple[slice, slice] | None:
    """Pixel window of radius ``r`` around (cx, cy) clipped to the image; None if empty."""
    x0, x1 = max(0, int(cx - r) - 1), min(size, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r) - 1), min(size, int(cy + r) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _local(sl: tuple[slice, slice], cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the window's pixel centres in a frame centred at (cx, cy) and rotated by
    ``theta`` (radians): u along the object's long axis, v across it."""
    ys = np.arange(sl[0].start, sl[0].stop, dtype=np.float32) + 0.5 - cy
    xs = np.arange(sl[1].start, sl[1].stop, dtype=np.float32) + 0.5 - cx
    c, s = math.cos(theta), math.sin(theta)
    u = xs[None, :] * c + ys[:, None] * s  # (h, w)
    v = -xs[None, :] * s + ys[:, None] * c  # (h, w)
    return u, v


def _upsample_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise (size, size), roughly unit variance, with ``cells`` features per side.

    A (cells + 2)^2 grid of normal values interpolated with normalised Gaussian weights,
    computed separably as ``A @ low @ A.T`` (fast for the small sizes used here).
    """
    n = cells + 2
    low = rng.standard_normal((n, n)).astype(np.float32)
    centres = (np.arange(n, dtype=np.float32) - 0.5) * (size / cells)  # grid in pixel units
    x = np.arange(size, dtype=np.float32) + 0.5
    a = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / (0.6 * size / cells)) ** 2)  # (S, n)
    a /= a.sum(axis=1, keepdims=True)
    out = a @ low @ a.T  # (S, S)
    return (out / (out.std() + 1e-6)).astype(np.float32)


_LUTS: dict[tuple[str, ...], np.ndarray] = {}


def _concept_lut(concepts: tuple[str, ...]) -> np.ndarray:
    """(256,) bool table of concept ids in ``concepts`` (cached)."""
    lut = _LUTS.get(concepts)
    if lut is None:
        lut = np.zeros(256, bool)
        lut[[CONCEPT_ID[c] for c in concepts]] = True
        _LUTS[concepts] = lut
    return lut


# --------------------------------------------------------------------------- the canvas
class _Canvas:
    """Image, mask and bookkeeping layers of one scene being drawn."""

    def __init__(self, rng: np.random.Generator, size: int, domain: Domain) -> None:
        self.rng, self.S, self.d = rng, size, domain
        self.img = np.zeros((size, size, 3), np.float32)
        self.mask = np.zeros((size, size), np.uint8)
        self.height = np.zeros((size, size), np.float32)  # object heights in metres
        self.px = 1.0 / domain.gsd  # pixels per metre
        az = math.radians(domain.sun_azimuth)
        self.sun = (math.cos(az), math.sin(az))
        self.shadow_per_m = self.px / math.tan(math.radians(max(domain.sun_elevation, 5.0)))
        self.grain = rng.standard_normal((size, size)).astype(np.float32)  # fine texture
        self.mottle = _upsample_noise(rng, size, max(2, int(size / (6 * self.px)) + 1))
        self.road_lines: list[tuple[float, float, float]] = []  # (theta, offset, width px)
        self.bays: list[tuple[float, float, float]] = []  # parking bays (cx, cy, theta)
        theta = domain.grid_angle
        self.theta = math.radians(theta if theta is not None else float(rng.uniform(0, 90)))

    # ---- painting
    def paint(self, sl: tuple[slice, slice], region: np.ndarray, concept: str | None,
              color: np.ndarray, grain: float = 0.04, mottle: float = 0.05,
              shade: np.ndarray | float = 1.0) -> None:
        """Write ``color`` (modulated by texture and ``shade``) into ``region`` of window
        ``sl`` and, unless ``concept`` is None (markings, details), its id into the mask."""
        if not region.any():
            return
        tex = 1.0 + grain * self.grain[sl] + mottle * self.mottle[sl]
        val = np.asarray(color, np.float32)[None, None, :] * (tex * shade)[..., None]
        self.img[sl][region] = val[region]
        if concept is not None:
            self.mask[sl][region] = CONCEPT_ID[concept]

    def is_(self, sl: tuple[slice, slice], *concepts: str) -> np.ndarray:
        """Boolean map of the window: pixels whose current concept is one of ``concepts``."""
        return _concept_lut(concepts)[self.mask[sl]]

    def cast(self, sl: tuple[slice, slice], footprint: np.ndarray, height_m: float) -> None:
        """Record an object of ``height_m`` metres standing on ``footprint`` in the height map
        (its shadow is cast in :meth:`shadows`)."""
        h = self.height[sl]
        h[footprint] = np.maximum(h[footprint], height_m)

    def shadows(self) -> np.ndarray:
        """Shadow map (S, S) bool of the height map: a pixel is in shadow when the ray toward
        the sun passes below an object's top (heightfield ray march, 1 px steps)."""
        h, S = self.height, self.S
        shadow = np.zeros((S, S), bool)
        top = float(h.max())
        if top <= 0:
            return shadow
        seen: set[tuple[int, int]] = set()
        for k in range(1, int(math.ceil(top * self.shadow_per_m)) + 1):
            dx, dy = int(round(k * self.sun[0])), int(round(k * self.sun[1]))
            if (dx, dy) in seen or abs(dx) >= S or abs(dy) >= S:
                continue
            seen.add((dx, dy))
            rise = k / self.shadow_per_m  # metres the ray climbs over k pixels
            src = h[max(0, -dy):S - max(0, dy), max(0, -dx):S - max(0, dx)]  # h at p - (dx, dy)
            dst = (slice(max(0, dy), S - max(0, -dy)), slice(max(0, dx), S - max(0, -dx)))
            shadow[dst] |= src - rise > h[dst] + 0.05
        return shadow

    # ---- layers
    def ground(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        names = [c for c in _GROUND if d.weight(c) > 0] or ["low_vegetation"]
        p = np.array([max(d.weight(c), 1e-6) for c in names], np.float64)
        p /= p.sum()
        full = (slice(0, S), slice(0, S))
        u, v = _local(full, S / 2, S / 2, self.theta)
        warp = 2.0 * self.px
        u = u + warp * _upsample_noise(rng, S, 3)
        v = v + warp * _upsample_noise(rng, S, 3)
        # recursive split of a square covering the rotated image into parcels
        half = S * 0.75
        stack, rects = [(-half, half, -half, half)], []
        min_side = d.parcel_m * self.px
        while stack:
            u0, u1, v0, v1 = stack.pop()
            wu, wv = u1 - u0, v1 - v0
            if max(wu, wv) < 2 * min_side or len(rects) + len(stack) > 40:
                rects.append((u0, u1, v0, v1))
                continue
            f = rng.uniform(0.3, 0.7)
            if wu >= wv:
                stack += [(u0, u0 + f * wu, v0, v1), (u0 + f * wu, u1, v0, v1)]
            else:
                stack += [(u0, u1, v0, v0 + f * wv), (u0, u1, v0 + f * wv, v1)]
        for u0, u1, v0, v1 in rects:
            region = (u >= u0) & (u < u1) & (v >= v0) & (v < v1)
            if not region.any():
                continue
            c = names[int(rng.choice(len(names), p=p))]
            jitter = rng.uniform(0.88, 1.12, 3).astype(np.float32)
            if c == "field":
                col = np.asarray(_FIELD_COLORS[int(rng.integers(len(_FIELD_COLORS)))], np.float32)
                col = 0.5 * col + 0.5 * d.color("field")
                ang = self.theta + (0.0 if rng.random() < 0.5 else math.pi / 2)
                period = rng.uniform(3.0, 6.0) * self.px ** 0.5
                t = u * math.cos(ang - self.theta) + v * math.sin(ang - self.theta)
                shade = 1.0 + 0.08 * np.sin(2 * np.pi * t / period)
                self.paint(full, region, c, col * jitter, grain=0.03, mottle=0.04, shade=shade)
            elif c == "pavement":
                self.paint(full, region, c, d.color(c) * jitter, grain=0.03, mottle=0.03)
            else:
                self.paint(full, region, c, d.color(c) * jitter, grain=0.07, mottle=0.08)
        # patches of bare soil in vegetation and vice versa
        blobs = _upsample_noise(rng, S, 5) > 1.3
        veg = self.mask == CONCEPT_ID["low_vegetation"]
        self.paint(full, blobs & veg, "bare_soil", d.color("bare_soil"), grain=0.08)
        soil = (self.mask == CONCEPT_ID["bare_soil"]) & ~blobs
        self.paint(full, (_upsample_noise(rng, S, 5) > 1.4) & soil, "low_vegetation",
                   d.color("low_vegetation"), grain=0.08)

    def water(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        if rng.random() >= min(d.weight("water"), 0.95):
            return
        full = (slice(0, S), slice(0, S))
        kind = ("lake", "river", "coast")[int(rng.integers(3))]
        ang = float(rng.uniform(0, math.pi))
        u, v = _local(full, rng.uniform(0.2, 0.8) * S, rng.uniform(0.2, 0.8) * S, ang)
        if kind == "lake":
            r = rng.uniform(0.15, 0.35) * S
            field = np.sqrt(u ** 2 + (v * rng.uniform(1.0, 1.8)) ** 2) / r
            water = field + 0.25 * _upsample_noise(rng, S, 3) < 1.0
        elif kind == "river":
            width = rng.uniform(12, 35) * self.px
            curve = rng.uniform(0.05, 0.2) * S * np.sin(2 * np.pi * u / (rng.uniform(0.8, 2) * S)
                                                        + rng.uniform(0, 2 * np.pi))
            water = np.abs(v - curve) < width / 2
        else:
            wig = 0.06 * S * _upsample_noise(rng, S, 2)
            water = v + wig > rng.uniform(-0.1, 0.25) * S
        if water.mean() < 0.03:
            return
        if d.weight("sand") > 0 and rng.random() < min(1.0, d.weight("sand") + 0.3):
            beach = ndimage.binary_dilation(water, iterations=max(1, int(rng.uniform(2, 6) * self.px))) & ~water
            self.paint(full, beach, "sand", d.color("sand"), grain=0.04, mottle=0.04)
        depth = ndimage.distance_transform_edt(water).astype(np.float32)
        shade = 1.1 - 0.35 * np.clip(depth / (8 * self.px + 1), 0, 1)
        self.paint(full, water, "water", d.color("water"), grain=0.02, mottle=0.06, shade=shade)

    def roads(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        wr = d.weight("road")
        if rng.random() >= min(wr, 0.95):
            return
        n = 1 + int(rng.binomial(2, min(0.9, 0.45 * wr)))
        full = (slice(0, S), slice(0, S))
        water = self.mask == CONCEPT_ID["water"]
        mark = np.asarray((235, 235, 225), np.float32)
        for _ in range(n):
            theta = self.theta + (0.0 if rng.random() < 0.5 else math.pi / 2)
            off = float(rng.uniform(-0.4, 0.4) * S)
            width = float(rng.uniform(6.0, 11.0) * self.px)
            u, v = _local(full, S / 2, S / 2, theta)
            road = np.abs(v - off) < width / 2
            if (road & water).sum() > 0.1 * road.sum():
                continue
            self.paint(full, road, "road", d.color("road"), grain=0.05, mottle=0.04)
            if width > 7:
                dash, period = 3.0 * self.px, 9.0 * self.px
                centre = (np.abs(v - off) < max(0.5, 0.08 * self.px)) & ((u % period) < dash) & road
                self.paint(full, centre, None, mark, grain=0.02, mottle=0.0)
            if width > 10:
                edge = (np.abs(np.abs(v - off) - (width / 2 - 0.6 * self.px)) < max(0.45, 0.08 * self.px)) & road
                self.paint(full, edge, None, mark * 0.92, grain=0.02, mottle=0.0)
            self.road_lines.append((theta, off, width))

    def parking(self) -> None:
        d, rng = self.d, self.rng
        if not self.road_lines:
            return
        for theta, off, width in list(self.road_lines):
            if rng.random() >= min(d.weight("pavement"), 0.9):
                continue
            L = rng.uniform(20, 45) * self.px
            W = rng.uniform(12, 22) * self.px
            side = 1 if rng.random() < 0.5 else -1
            t = rng.uniform(-0.3, 0.3) * self.S
            vc = off + side * (width / 2 + W / 2 + 1)
            c, s = math.cos(theta), math.sin(theta)
            cx = self.S / 2 + t * c - vc * s
            cy = self.S / 2 + t * s + vc * c
            sl = _window(cx, cy, math.hypot(L, W) / 2, self.S)
            if sl is None:
                continue
            u, v = _local(sl, cx, cy, theta)
            lot = (np.abs(u) < L / 2) & (np.abs(v) < W / 2) & ~self.is_(sl, "water", "road")
            self.paint(sl, lot, "pavement", d.color("pavement") * 0.92, grain=0.03, mottle=0.02)
            bay = 2.6 * self.px
            lines = (np.abs(((u + L / 2) % bay)) < max(0.5, 0.12 * self.px)) & (np.abs(v) < W / 2 - 0.5) & lot
            self.paint(sl, lines, None, np.asarray((225, 225, 220), np.float32), grain=0.02, mottle=0.0)
            for k in range(int(L // bay)):
                for row in (-1, 1):
                    bu = -L / 2 + (k + 0.5) * bay
                    bv = row * W / 4
                    self.bays.append((cx + bu * c - bv * s, cy + bu * s + bv * c, theta + math.pi / 2))

    def _free_spot(self, sl: tuple[slice, slice], region: np.ndarray, allowed: tuple[str, ...]) -> bool:
        """True when the whole region lies on ``allowed`` concepts (and inside the image)."""
        return bool(region.any()) and bool(self.is_(sl, *allowed)[region].all())

    def courts(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        n = int(rng.poisson(0.6 * d.weight("court")))
        white = np.asarray((238, 238, 238), np.float32)
        for _ in range(n):
            for _attempt in range(8):
                L, W = ((23.8, 11.0), (28.0, 15.0), (30.0, 18.0))[int(rng.integers(3))]
                L, W = (L + 6) * self.px, (W + 4) * self.px  # run-out margin
                theta = self.theta + (0.0 if rng.random() < 0.5 else math.pi / 2)
                cx, cy = rng.uniform(0, S), rng.uniform(0, S)
                sl = _window(cx, cy, math.hypot(L, W) / 2, S)
                if sl is None:
                    continue
                u, v = _local(sl, cx, cy, theta)
                court = (np.abs(u) < L / 2) & (np.abs(v) < W / 2)
                if court.sum() < 0.6 * L * W or not self._free_spot(sl, court, _GROUND):
                    continue
                col = np.asarray(_COURT_COLORS[int(rng.integers(len(_COURT_COLORS)))], np.float32)
                self.paint(sl, court, "court", col, grain=0.02, mottle=0.02)
                lw = max(0.5, 0.1 * self.px)
                li, wi = L / 2 - 3 * self.px, W / 2 - 2 * self.px
                outline = court & (np.abs(u) < li + lw) & (np.abs(v) < wi + lw) & (
                    (np.abs(np.abs(u) - li) < lw) | (np.abs(np.abs(v) - wi) < lw) | (np.abs(u) < lw))
                self.paint(sl, outline, None, white, grain=0.01, mottle=0.0)
                break

    def buildings(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        area_m2 = (S / self.px) ** 2
        n_try = int(rng.poisson(d.weight("building") * area_m2 / 450.0)) + 1
        n_try = min(n_try, 60)
        placed = 0
        for _ in range(n_try * 3):
            if placed >= n_try:
                break
            L = rng.uniform(9, 26) * self.px
            W = rng.uniform(7, 13) * self.px
            theta = self.theta + (0.0 if rng.random() < 0.5 else math.pi / 2) + rng.normal(0, 0.03)
            if not self.road_lines:
                theta = float(rng.uniform(0, math.pi)) if rng.random() < 0.5 else theta
            cx, cy = rng.uniform(-0.05, 1.05) * S, rng.uniform(-0.05, 1.05) * S
            sl = _window(cx, cy, math.hypot(L, L) / 2 + 2 + 1.5 * self.px, S)
            if sl is None:
                continue
            u, v = _local(sl, cx, cy, theta)
            shape = ("rect", "rect", "L", "courtyard", "T")[int(rng.integers(5))]
            au = np.abs(u)

            def footprint(m: float) -> list[np.ndarray]:
                """Parts of the footprint grown by a margin of ``m`` pixels."""
                ps = [(au < L / 2 + m) & (np.abs(v) < W / 2 + m)]
                if shape == "L":
                    ps.append((np.abs(u - (L / 2 - W / 2)) < W / 2 + m) & (v > -m) & (v < L * 0.6 + m))
                elif shape == "T":
                    ps.append((au < W / 2 + m) & (v > -m) & (v < L * 0.55 + m))
                elif shape == "courtyard":
                    ps = [(au < L / 2 + m) & (np.abs(v) < L / 2 * 0.8 + m)]
                return ps

            if shape == "courtyard" and W <= 9 * self.px:
                shape = "rect"
            parts = footprint(0.0)
            foot = np.logical_or.reduce(parts)
            hole = None
            if shape == "courtyard":
                hole = (au < L / 2 - 4 * self.px) & (np.abs(v) < L / 2 * 0.8 - 4 * self.px)
                foot &= ~hole
            if foot.sum() < 6:
                continue
            grown = np.logical_or.reduce(footprint(max(1.0, 1.5 * self.px)))
            if not self._free_spot(sl, grown, _GROUND):
                continue
            roof = np.asarray(d.roof_colors[int(rng.integers(len(d.roof_colors)))], np.float32)
            roof = roof * rng.uniform(0.9, 1.1, 3).astype(np.float32)
            style = ("flat", "gable", "hip")[int(rng.integers(3))]
            shade: np.ndarray | float = 1.0
            if style != "flat" and hole is None:
                # two slopes: the one facing the sun is brighter (sun comes from -shadow dir)
                nx, ny = -math.sin(theta), math.cos(theta)  # +v direction in image coords
                facing = -(nx * self.sun[0] + ny * self.sun[1])
                side = np.where(v > 0, facing, -facing).astype(np.float32)
                if shape in ("L", "T"):
                    side = np.where(parts[0], side, np.where(u > 0, 0.5, -0.5)).astype(np.float32)
                shade = 1.0 + 0.18 * side
                if style == "hip":
                    end = np.abs(u) > L / 2 - W / 2
                    shade = np.where(end & parts[0], 1.0 - 0.1 * np.sign(u) * self.sun[0], shade)
            self.paint(sl, foot, "building", roof, grain=0.03, mottle=0.02, shade=shade)
            if style == "flat" and W > 6:
                # rooftop units and a parapet line
                inner = (np.abs(u) < L / 2 - 0.8 * self.px) & (np.abs(v) < W / 2 - 0.8 * self.px) & foot
                self.paint(sl, foot & ~inner, None, roof * 0.8, grain=0.02, mottle=0.0)
                for _k in range(int(rng.integers(0, 3))):
                    bu, bv = rng.uniform(-L / 3, L / 3), rng.uniform(-W / 4, W / 4)
                    box = (np.abs(u - bu) < 1.2 * self.px) & (np.abs(v - bv) < 1.0 * self.px) & inner
                    self.paint(sl, box, None, roof * 1.2 + 10, grain=0.02, mottle=0.0)
            if hole is not None:
                self.paint(sl, hole & self.is_(sl, *_GROUND), "pavement", d.color("pavement"),
                           grain=0.03, mottle=0.02)
            h = rng.uniform(*d.building_height)
            self.cast(sl, foot, h)
            placed += 1

    def trees(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        area_m2 = (S / self.px) ** 2
        n = int(rng.poisson(d.weight("tree") * area_m2 / 120.0))
        n = min(n, 250)
        if n == 0:
            return
        n_clusters = 1 + int(rng.integers(4))
        centres = rng.uniform(0, S, (n_clusters, 2))
        spread = rng.uniform(6, 20, n_clusters) * self.px
        base = d.color("tree")
        for _ in range(n):
            k = int(rng.integers(n_clusters))
            cx, cy = centres[k] + rng.normal(0, spread[k], 2)
            if not (0 <= cx < S and 0 <= cy < S):
                continue
            if self.mask[int(cy), int(cx)] not in (CONCEPT_ID["low_vegetation"], CONCEPT_ID["bare_soil"],
                                                   CONCEPT_ID["field"], CONCEPT_ID["tree"],
                                                   CONCEPT_ID["pavement"]):
                continue
            r = rng.uniform(1.5, 4.5) * self.px
            sl = _window(cx, cy, r + 1, S)
            u, v = _local(sl, cx, cy, 0.0)
            rr = np.sqrt(u ** 2 + v ** 2) / r
            wobble = 1.0 + 0.12 * self.mottle[sl]
            crown = (rr < wobble) & ~self.is_(sl, "building", "water", "court", "ship")
            if not crown.any():
                continue
            lit = -(u * self.sun[0] + v * self.sun[1]) / r  # toward the sun = brighter
            shade = (1.05 - 0.35 * rr ** 2 + 0.15 * lit).astype(np.float32)
            col = base * rng.uniform(0.8, 1.2, 3).astype(np.float32)
            self.paint(sl, crown, "tree", col, grain=0.14, mottle=0.05, shade=shade)
            self.cast(sl, crown, 2.2 * r / self.px)

    def cars(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        wc = d.weight("car")
        spots: list[tuple[float, float, float]] = []
        for theta, off, width in self.road_lines:
            length_m = S / self.px * 1.4
            for _ in range(int(rng.poisson(wc * length_m / 18.0))):
                t = rng.uniform(-0.7, 0.7) * S
                lane = (1 if rng.random() < 0.5 else -1) * width / 4
                c, s = math.cos(theta), math.sin(theta)
                spots.append((S / 2 + t * c - (off + lane) * s, S / 2 + t * s + (off + lane) * c, theta))
        for bay in self.bays:
            if rng.random() < min(0.9, 0.6 * wc):
                spots.append(bay)
        for cx, cy, theta in spots:
            L, W = rng.uniform(4.0, 5.2) * self.px, rng.uniform(1.7, 2.0) * self.px
            sl = _window(cx, cy, L / 2 + 1, S)
            if sl is None:
                continue
            u, v = _local(sl, cx, cy, theta + rng.normal(0, 0.03))
            car = (np.abs(u) < L / 2) & (np.abs(v) < W / 2)
            if not self._free_spot(sl, car, ("road", "pavement")):
                continue
            col = np.asarray(_CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))], np.float32)
            shade = np.where(np.abs(u - L * 0.12) < L * 0.1, 0.45, 1.0).astype(np.float32)  # windscreen
            self.paint(sl, car, "car", col, grain=0.03, mottle=0.0, shade=shade)
            self.cast(sl, car, 1.5)

    def ships(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        water = self.mask == CONCEPT_ID["water"]
        if d.weight("ship") <= 0 or water.mean() < 0.05:
            return
        n = int(rng.poisson(d.weight("ship") * (1 + water.mean() * 4)))
        ys, xs = np.nonzero(water)
        for _ in range(n):
            for _attempt in range(10):
                i = int(rng.integers(len(ys)))
                cx, cy = xs[i] + 0.5, ys[i] + 0.5
                L = rng.uniform(10, 40) * self.px
                B = L * rng.uniform(0.18, 0.3)
                theta = float(rng.uniform(0, 2 * math.pi))
                sl = _window(cx, cy, L / 2 + 2 * self.px, S)
                u, v = _local(sl, cx, cy, theta)
                taper = np.clip((L / 2 - u) / (0.35 * L), 0, 1)  # pointed bow at +u
                hull = (np.abs(u) < L / 2) & (np.abs(v) < B / 2 * np.sqrt(taper))
                if hull.sum() < 4 or not self._free_spot(sl, ndimage.binary_dilation(hull), ("water",)):
                    continue
                # wake behind the stern (image only, stays water)
                wake = (u < -L / 2) & (u > -L * 1.3) & (np.abs(v) < B / 2 * (1 + (-u - L / 2) / L))
                wake &= self.is_(sl, "water")
                self.paint(sl, wake, None, d.color("water") * 1.35 + 20, grain=0.1, mottle=0.0)
                col = np.asarray(_HULL_COLORS[int(rng.integers(len(_HULL_COLORS)))], np.float32)
                self.paint(sl, hull, "ship", col, grain=0.03, mottle=0.0)
                deck = hull & (np.abs(u + L * 0.1) < L * 0.18) & (np.abs(v) < B * 0.3)
                self.paint(sl, deck, None, np.asarray((245, 245, 240), np.float32) * 0.9, grain=0.02)
                self.cast(sl, hull, 3.0)
                break

    def clutter(self) -> None:
        d, rng, S = self.d, self.rng, self.S
        area_m2 = (S / self.px) ** 2
        n = int(rng.poisson(d.weight("clutter") * area_m2 / 1500.0))
        for _ in range(min(n, 40)):
            cx, cy = rng.uniform(0, S), rng.uniform(0, S)
            kind = ("container", "pile", "shed")[int(rng.integers(3))]
            if kind == "container":
                L, W = rng.uniform(6, 12) * self.px, 2.4 * self.px
            elif kind == "shed":
                L, W = rng.uniform(2.5, 5) * self.px, rng.uniform(2, 4) * self.px
            else:
                L = W = rng.uniform(2, 6) * self.px
            theta = self.theta if rng.random() < 0.7 else float(rng.uniform(0, math.pi))
            sl = _window(cx, cy, max(L, W) / 2 + 1, S)
            if sl is None:
                continue
            u, v = _local(sl, cx, cy, theta)
            if kind == "pile":
                region = np.sqrt(u ** 2 + v ** 2) < L / 2 * (1 + 0.3 * self.mottle[sl])
            else:
                region = (np.abs(u) < L / 2) & (np.abs(v) < W / 2)
            if not self._free_spot(sl, region, ("pavement", "bare_soil", "low_vegetation", "sand")):
                continue
            col = np.asarray(_CLUTTER_COLORS[int(rng.integers(len(_CLUTTER_COLORS)))], np.float32)
            self.paint(sl, region, "clutter", col, grain=0.12 if kind == "pile" else 0.04, mottle=0.05)
            self.cast(sl, region, 2.5 if kind != "pile" else 1.0)

    def finish(self) -> np.ndarray:
        """Apply shadows and the domain look; return the uint8 RGB image."""
        d, img = self.d, self.img
        shadow = self.shadows()
        if shadow.any():
            sh = ndimage.gaussian_filter(shadow.astype(np.float32), 0.6)
            # shadows are darker and bluer (sky light)
            dark = 1.0 - d.shadow_strength * sh
            img = img * dark[..., None] * (1.0 + 0.12 * sh[..., None] * np.array([-0.3, 0.0, 0.6], np.float32))
        img = img * np.asarray(d.tint, np.float32) * d.brightness
        grey = img.mean(axis=2, keepdims=True)
        img = grey + d.saturation * (img - grey)
        img = 255.0 * np.power(np.clip(img / 255.0, 0.0, 1.0), d.gamma)
        if d.haze > 0:
            img = (1.0 - d.haze) * img + d.haze * np.asarray(d.haze_color, np.float32)
        if d.blur > 0:
            img = ndimage.gaussian_filter(img, (d.blur, d.blur, 0), truncate=3.0)
        if d.noise > 0:
            img = img + d.noise * self.rng.standard_normal(img.shape).astype(np.float32)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_scene(rng: np.random.Generator, size: int, domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    """Draw one top-down aerial scene.

    Args:
        rng: random generator; the same state gives byte-identical outputs.
        size: image side in pixels.
        domain: look and content statistics of the scene.

    Returns:
        image: uint8 (size, size, 3) RGB.
        mask: uint8 (size, size) concept ids (indices into :data:`CONCEPTS`), exact per pixel.
    """
    if size < 16:
        raise ValueError(f"render_scene: size must be >= 16, got {size}")
    c = _Canvas(rng, size, domain)
    c.ground()
    c.water()
    c.roads()
    c.parking()
    c.courts()
    c.buildings()
    c.trees()
    c.cars()
    c.ships()
    c.clutter()
    img = c.finish()
    return img, c.mask


def concepts_present(mask: np.ndarray, min_fraction: float = 0.0) -> list[str]:
    """Concepts covering more than ``min_fraction`` of a concept-id mask, by decreasing area.

    Args:
        mask: uint8 (H, W) concept ids from :func:`render_scene`.
        min_fraction: minimum pixel fraction.
    """
    counts = np.bincount(mask.ravel(), minlength=len(CONCEPTS))[: len(CONCEPTS)]
    frac = counts / max(1, mask.size)
    order = np.argsort(-frac, kind="stable")
    return [CONCEPTS[i] for i in order if frac[i] > min_fraction]


def colorize(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Colourise an id mask: ``colors`` (N, 3) uint8 indexed by id; 255 (ignore) is black.

    Args:
        mask: (H, W) integer ids.
        colors: (N, 3) colour table.
    """
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = colors
    return lut[mask.astype(np.int64)]


def _quiet(progress: bool) -> dict:
    """tqdm kwargs: no bar when ``progress`` is False; otherwise tqdm's defaults, so that
    ``TQDM_DISABLE`` and non-tty detection still apply."""
    return {"leave": False} if progress else {"disable": True}


# --------------------------------------------------------------------------- writing datasets
def _save_image(arr: np.ndarray, path: os.PathLike[str] | str) -> None:
    """Save with deterministic bytes (no timestamps / metadata): png lossless, jpg quality 92."""
    im = Image.fromarray(arr)
    if str(path).lower().endswith((".jpg", ".jpeg")):
        im.save(path, format="JPEG", quality=92, subsampling=0)
    else:
        im.save(path, format="PNG", compress_level=6)


def scene_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """Generator of one scene, independent of how many scenes other splits hold."""
    key = [seed, zlib.crc32(dataset.encode()), zlib.crc32(split.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(key))


def concept_lut(concept_ids: Mapping[str, int]) -> np.ndarray:
    """(256,) uint8 map from concept id to class id; unmapped concepts -> 255 (ignore)."""
    lut = np.full(256, 255, np.uint8)
    for c, k in concept_ids.items():
        lut[CONCEPT_ID[c]] = k
    return lut


def generate_dataset(root: str | os.PathLike[str], name: str, seed: int, image_size: int,
                     counts: Mapping[str, int], progress: bool = True) -> dict[str, int]:
    """Render synthetic dataset ``name`` (a catalog entry) into the archive layout under
    ``root``: for each split in ``counts`` its images and mode-"L" png masks; for source
    datasets the ``all`` split is written as train + val (same files, as in the archive).

    Args:
        root: archive root (e.g. ``data/synth``).
        name: synthetic dataset name in :data:`drseg.data.catalog.SYNTH`.
        seed: base seed.
        image_size: image side in pixels.
        counts: images per split, e.g. ``{"train": 160, "val": 40}`` (source) or
            ``{"all": 80}`` (target).
        progress: tqdm bar.

    Returns:
        images written per split.
    """
    if name not in SYNTH:
        raise ValueError(f"generate_dataset: {name!r} is not a synthetic dataset ({', '.join(SYNTH)})")
    spec = SYNTH[name]
    domain = DOMAINS[spec.domain]
    lut = concept_lut(spec.concept_ids)
    root = Path(root)
    written: dict[str, int] = {}
    gen_splits = [s for s in counts if not (spec.is_source and s == "all")]
    for split in gen_splits:
        dirs = spec.split(split)
        img_dir, mask_dir = root / dirs.image_dir, root / dirs.mask_dir
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        outs = [img_dir, mask_dir]
        if spec.is_source:
            all_dirs = spec.split("all")
            outs += [root / all_dirs.image_dir, root / all_dirs.mask_dir]
            for d in outs[2:]:
                d.mkdir(parents=True, exist_ok=True)
        prefix = f"{name.removeprefix('synth_')}_{split}"
        for i in tqdm(range(int(counts[split])), desc=f"{name}/{split}", **_quiet(progress)):
            image, cmask = render_scene(scene_rng(seed, name, split, i), image_size, domain)
            mask = lut[cmask]
            stem = f"{prefix}_{i:04d}"
            targets = [(img_dir, mask_dir)] + ([(outs[2], outs[3])] if spec.is_source else [])
            for idir, mdir in targets:
                _save_image(image, idir / f"{stem}{spec.image_ext}")
                Image.fromarray(mask, mode="L").save(mdir / f"{stem}.png", format="PNG",
                                                     compress_level=6)
        written[split] = int(counts[split])
        if spec.is_source:
            written["all"] = written.get("all", 0) + int(counts[split])
    return written
