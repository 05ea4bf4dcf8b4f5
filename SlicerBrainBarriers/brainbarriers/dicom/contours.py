"""Closed polygons along the pixel boundaries of a 2D mask (for RTSTRUCT planar contours).

Why hand-written: the usual mask-to-contour helpers (marching squares, OpenCV's findContours)
draw through pixel centres or half-way points, so a rasteriser that fills the polygon gives back
a mask half a pixel thinner all round: a 2-voxel falx loses about a third of its Dice. These
polygons follow the pixel edges, so filling them (pixel centre inside the polygon, even-odd rule)
gives back exactly the input mask.

Orientation: outer boundaries run one way and hole boundaries the other (the foreground is always
on the same side); at a corner where two foreground pixels touch only diagonally the trace turns
towards the current pixel, so every loop is simple (loops may touch at a corner, never cross).
``boundary_loops`` gives holes as separate loops; ``keyhole_polygons`` joins every hole to its
outer loop by a zero-width cut along a pixel edge (the keyhole technique of DICOM PS3.3 C.8.8.6),
so that each polygon stands alone: readers that combine the contours of a slice by union (as
plastimatch does by default) and readers that use the even-odd rule both recover the hole. The cut
runs along pixel edges, never through a pixel centre, so it adds no area.
"""

from __future__ import annotations

import numpy as np

# Corner coordinates are (x, y) = (column, row) of the pixel grid's corners, y pointing down;
# pixel (row r, column c) spans corners (c, r) .. (c + 1, r + 1).


def boundary_loops(mask: np.ndarray) -> list[np.ndarray]:
    """Closed loops of corner points (x, y) around the foreground of a 2D boolean mask.

    Each loop is an (n, 2) integer array without the closing repeat, collinear points removed.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    # Directed edges with the foreground on the right of travel (y down): top edges run +x,
    # right edges +y, bottom edges -x, left edges -y.
    fg = m[1:-1, 1:-1]
    sides = (
        (fg & ~m[:-2, 1:-1], (0, 0), (1, 0)),   # top: (c, r) -> (c+1, r)
        (fg & ~m[1:-1, 2:], (1, 0), (1, 1)),    # right: (c+1, r) -> (c+1, r+1)
        (fg & ~m[2:, 1:-1], (1, 1), (0, 1)),    # bottom: (c+1, r+1) -> (c, r+1)
        (fg & ~m[1:-1, :-2], (0, 1), (0, 0)),   # left: (c, r+1) -> (c, r)
    )
    for side, (sx, sy), (ex, ey) in sides:
        rows, cols = np.nonzero(side)
        for r, c in zip(rows.tolist(), cols.tolist()):
            edges.setdefault((c + sx, r + sy), []).append((c + ex, r + ey))
    loops = []
    while edges:
        # Start on an ordinary corner so that saddles are passed by the turning rule.
        start = next((v for v, out in edges.items() if len(out) == 1), next(iter(edges)))
        loop = [start]
        current = start
        direction = None
        while True:
            options = edges[current]
            if len(options) == 1 or direction is None:
                nxt = options.pop(0)
            else:
                # A saddle corner: turn right (towards the pixel being traced).
                right = (-direction[1], direction[0])
                pick = next((i for i, p in enumerate(options) if (p[0] - current[0], p[1] - current[1]) == right), 0)
                nxt = options.pop(pick)
            if not options:
                del edges[current]
            direction = (nxt[0] - current[0], nxt[1] - current[1])
            current = nxt
            if current == start:
                break
            loop.append(current)
        loops.append(_drop_collinear(np.array(loop, dtype=np.int64)))
    return loops


def signed_area(loop: np.ndarray) -> float:
    """Shoelace area: positive for outer boundaries, negative for holes (see ``boundary_loops``)."""
    x, y = loop[:, 0].astype(float), loop[:, 1].astype(float)
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _inside(loop: np.ndarray, x: float, y: float) -> bool:
    """Even-odd test of a point off the corner grid (half-integer coordinates) against one loop."""
    x0, y0 = loop[:, 0], loop[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    vertical = x0 == x1
    crosses = vertical & (x0 > x) & (np.minimum(y0, y1) < y) & (np.maximum(y0, y1) > y)
    return bool(crosses.sum() % 2)


def _top_left(loop: np.ndarray) -> int:
    return int(np.lexsort((loop[:, 0], loop[:, 1]))[0])


def _bridge(polygon: list[tuple[int, int]], hole: np.ndarray) -> list[tuple[int, int]]:
    """Join ``hole`` to ``polygon`` by a vertical cut up from the hole's top-left corner."""
    start = _top_left(hole)
    hx, hy = (int(v) for v in hole[start])
    best = None  # (hit y, edge index)
    n = len(polygon)
    for e in range(n):
        (ax, ay), (bx, by) = polygon[e], polygon[(e + 1) % n]
        if ay == by and ay < hy and min(ax, bx) <= hx <= max(ax, bx):
            hit = ay
        elif ax == bx == hx and min(ay, by) < hy:
            hit = min(max(ay, by), hy)
        else:
            continue
        if best is None or hit > best[0]:
            best = (hit, e)
    if best is None:  # cannot happen for a hole inside the polygon; keep the hole as its own loop
        raise ValueError("hole outside its polygon")
    hit, e = best
    p = (hx, hit)
    ring = [tuple(int(v) for v in pt) for pt in np.roll(hole, -start, axis=0)]
    merged = polygon[: e + 1] + [p] + ring + [(hx, hy), p] + polygon[e + 1 :]
    # Drop repeats where the cut starts on an existing vertex.
    out = [pt for i, pt in enumerate(merged) if pt != merged[i - 1]]
    return out


def keyhole_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """One polygon per 4-connected foreground region of a 2D mask, its holes joined by keyhole cuts."""
    loops = boundary_loops(mask)
    outers = [loop for loop in loops if signed_area(loop) > 0]
    holes = [loop for loop in loops if signed_area(loop) < 0]
    areas = [signed_area(loop) for loop in outers]
    children: list[list[np.ndarray]] = [[] for _ in outers]
    for hole in holes:
        x, y = hole[_top_left(hole)] + 0.5  # the hole's top-left pixel centre
        parents = [i for i, loop in enumerate(outers) if _inside(loop, x, y)]
        children[min(parents, key=lambda i: areas[i])].append(hole)
    polygons = []
    for outer, inner in zip(outers, children):
        polygon = [tuple(int(v) for v in pt) for pt in outer]
        for hole in sorted(inner, key=lambda h: tuple(h[_top_left(h)][::-1])):
            polygon = _bridge(polygon, hole)
        polygons.append(np.array(polygon, dtype=np.int64))
    return polygons


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    prev = np.roll(points, 1, axis=0)
    nxt = np.roll(points, -1, axis=0)
    cross = (points[:, 0] - prev[:, 0]) * (nxt[:, 1] - points[:, 1]) - (points[:, 1] - prev[:, 1]) * (nxt[:, 0] - points[:, 0])
    return points[cross != 0]


def fill_loops(loops: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of all loops together at pixel centres (inverse of ``boundary_loops`` and of
    ``keyhole_polygons``; for tests)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    px, py = xs + 0.5, ys + 0.5
    inside = np.zeros(shape, dtype=bool)
    for loop in loops:
        x0, y0 = loop[:, 0], loop[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        for a, b, c, d in zip(x0, y0, x1, y1):
            if b == d:
                continue  # horizontal edges never cross a centre's horizontal ray
            lo, hi = min(b, d), max(b, d)
            crosses = (py > lo) & (py < hi) & (px < a + (py - b) * (c - a) / (d - b))
            inside ^= crosses
    return inside
