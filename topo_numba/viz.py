"""Pictures of label and flow slices: labels in distinct colours, flows as HSV.

Flow slices use the convention of flow-based segmentation tools (Cellpose's
``dx_to_circ``): the hue is the direction of the flow in the plane of the
slice, the brightness its in-plane length, so that unit vectors lying in
the plane are fully bright and vectors pointing out of the plane (along the
slicing axis) are dark; background is black. Labels get a colour per id
(the same id always gets the same colour), background black.

Functions return ``(H, W, 3)`` uint8 RGB arrays; `figure` lays out titled
panels with Pillow, no plotting library (the ``viz`` extra: ``pip install
'topo-numba[viz]'``; the colouring functions need NumPy only).
"""

from __future__ import annotations

import numpy as np

__all__ = ["AXES", "take_slice", "hsv_to_rgb", "flow_to_rgb", "labels_to_rgb",
           "gray_to_rgb", "colour_wheel", "figure"]

AXES = {"z": 0, "y": 1, "x": 2}
_GOLDEN = 0.6180339887498949


def take_slice(volume: np.ndarray, axis: str = "z", index: int | None = None) -> np.ndarray:
    """The 2-D slice of the last three axes of `volume` at `index` along `axis`
    (default: the middle); leading (channel) axes are kept."""
    a = volume.ndim - 3 + AXES[axis]
    n = volume.shape[a]
    index = n // 2 if index is None else index
    if not 0 <= index < n:
        raise ValueError(f"slice index {index} is outside 0..{n - 1} along {axis}")
    return np.take(volume, index, axis=a)


def hsv_to_rgb(h, s, v) -> np.ndarray:
    """HSV in [0, 1] (arrays of one shape) -> RGB float in [0, 1], last axis 3."""
    h, s, v = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in (h, s, v)))
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(choices):
        sel = i == k
        rgb[sel] = np.stack([r[sel], g[sel], b[sel]], axis=-1)
    return rgb


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def flow_to_rgb(flow_slice: np.ndarray, axis: str = "z") -> np.ndarray:
    """Colour a flow slice: hue = in-plane direction, brightness = in-plane length.

    Parameters
    ----------
    flow_slice : (3, H, W) array_like of float
        Flow components (dz, dy, dx) on a slice taken along `axis`.
    axis : {"z", "y", "x"}
        The axis the slice was taken along; the other two are the plane.

    Returns
    -------
    rgb : (H, W, 3) ndarray of uint8
        Black where the in-plane component is 0 (background, sinks).

    Examples
    --------
    >>> f = np.zeros((3, 1, 2), np.float32)
    >>> f[2, 0, 0] = 1.0          # pointing along +x
    >>> flow_to_rgb(f)[0].tolist()
    [[0, 255, 255], [0, 0, 0]]
    """
    f = np.asarray(flow_slice, np.float64)
    rows, cols = [c for c in (0, 1, 2) if c != AXES[axis]]
    a, b = f[rows], f[cols]
    hue = (np.arctan2(a, b) + np.pi) / (2 * np.pi)
    mag = np.clip(np.hypot(a, b), 0.0, 1.0)
    return _to_uint8(hsv_to_rgb(hue, np.ones_like(mag), mag))


def labels_to_rgb(labels: np.ndarray) -> np.ndarray:
    """A distinct colour per label id (stable across slices and volumes), 0 black.

    Examples
    --------
    >>> labels_to_rgb(np.array([[0, 3]]))[0, 0].tolist()
    [0, 0, 0]
    """
    lab = np.asarray(labels)
    ids = lab.astype(np.uint64) if lab.dtype.kind in "iub" else np.rint(lab).astype(np.uint64)
    with np.errstate(over="ignore"):
        mixed = (ids * np.uint64(2654435761)) % np.uint64(1 << 32)
    hue = np.mod(ids.astype(np.float64) * _GOLDEN, 1.0)
    sat = 0.55 + 0.4 * (mixed % np.uint64(97)).astype(np.float64) / 96
    val = 0.75 + 0.25 * (mixed % np.uint64(89)).astype(np.float64) / 88
    rgb = _to_uint8(hsv_to_rgb(hue, sat, val))
    rgb[ids == 0] = 0
    return rgb


def gray_to_rgb(values: np.ndarray) -> np.ndarray:
    """Grey levels: values in [0, 1] as they are (probabilities), others
    scaled from their minimum to their maximum."""
    v = np.asarray(values, np.float64)
    finite = np.isfinite(v)
    lo, hi = (v[finite].min(), v[finite].max()) if finite.any() else (0.0, 1.0)
    if lo < 0 or hi > 1:
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    v = np.where(finite, v, 0.0)
    return _to_uint8(np.repeat(v[..., None], 3, axis=-1))


def colour_wheel(size: int = 48) -> np.ndarray:
    """Legend of `flow_to_rgb` for a slice along z: the colour of each
    in-plane direction (+x right, +y down), brighter towards the rim."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size]
    dy, dx = (y - c) / c, (x - c) / c
    r = np.hypot(dy, dx)
    flow = np.stack([np.zeros_like(dy), dy, dx]) / np.maximum(r, 1e-12)
    flow *= np.minimum(r, 1.0)
    rgb = flow_to_rgb(flow)
    rgb[r > 1.0] = 255
    return rgb


def _pil():
    """The ``PIL`` modules `figure` uses; a one-line ImportError without Pillow."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ImportError("topo_numba.viz.figure needs Pillow: "
                          "pip install 'topo-numba[viz]'") from None
    return Image, ImageDraw, ImageFont


def _font(ImageFont, size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """`text`, shortened at the front ("...tail") until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text


def figure(rows, title: str | None = None, caption: str | None = None, scale: int = 3,
           legend: np.ndarray | None = None) -> np.ndarray:
    """Lay out titled panels in a grid on a white page.

    Parameters
    ----------
    rows : list of list of (str, (H, W, 3) ndarray of uint8)
        Panels, row by row; each panel is enlarged `scale` times (nearest).
    title, caption : str, optional
        Text above and below the grid.
    scale : int
        Enlargement of the panels.
    legend : (h, w, 3) ndarray of uint8, optional
        A small picture (e.g. `colour_wheel`) put beside the caption.

    Returns
    -------
    page : (H, W, 3) ndarray of uint8
    """
    Image, ImageDraw, ImageFont = _pil()
    pad, head = 12, 22
    font, big = _font(ImageFont, 14), _font(ImageFont, 17)
    panels = [[(t, np.repeat(np.repeat(p, scale, 0), scale, 1)) for t, p in row] for row in rows]
    ncol = max(len(r) for r in panels)
    cell_w = max(p.shape[1] for r in panels for _, p in r)
    cell_h = max(p.shape[0] for r in panels for _, p in r)
    top = pad + (28 if title else 0)
    text_h = 18 * len(caption.splitlines()) if caption else 0
    foot_h = max(legend.shape[0] if legend is not None else 0, text_h)
    width = pad + ncol * (cell_w + pad)
    height = top + len(panels) * (head + cell_h + pad) + (foot_h + pad if foot_h else 0)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    if title:
        draw.text((pad, pad), title, fill="black", font=big)
    y = top
    for row in panels:
        for j, (text, img) in enumerate(row):
            x = pad + j * (cell_w + pad)
            draw.text((x, y + 3), _fit(draw, text, font, cell_w), fill="black", font=font)
            page.paste(Image.fromarray(np.ascontiguousarray(img)), (x, y + head))
        y += head + cell_h + pad
    if foot_h:
        x = pad
        if legend is not None:
            page.paste(Image.fromarray(np.ascontiguousarray(legend)), (x, y))
            x += legend.shape[1] + pad
        if caption:
            draw.multiline_text((x, y + max(0, (foot_h - text_h) // 2)), caption, fill="black",
                                font=font, spacing=4)
    return np.asarray(page)
