"""Instance segmentation metrics: IoU of overlapping instances and matching
(true / false positives, precision, recall, F1) at an IoU threshold.

The overlaps of all instance pairs come from one sparse contingency count over
the voxels (``_cpu.metrics``), O(voxels + instances): no loop over instance
pairs, no per-instance pass over the volume.

CPU torch tensors are accepted (``_core.torch_interop``): `instance_ious`
then returns tensors and `matching` a `Matching` whose arrays are tensors
(zero-copy, the dtypes of the NumPy results); scores stay floats. GPU arrays
(CUDA tensors included) are refused.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._core import validate as V
from ._core.dispatch import require_host
from ._core.torch_interop import host_tensors

__all__ = ["Matching", "instance_ious", "matching", "f1_score"]


class Matching(NamedTuple):
    """Result of `matching`.

    Attributes
    ----------
    iou_threshold : float
    n_true, n_pred : int
        Instances in the true and the predicted labels.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched true instances.
    precision, recall, f1 : float
        ``tp / n_pred``, ``tp / n_true``, ``2 tp / (n_true + n_pred)``; each
        is 1.0 when its denominator is 0 (nothing to find, nothing found).
    mean_matched_iou : float
        Mean IoU of the matched pairs (0.0 without matches).
    matched_true, matched_pred : (tp,) ndarray
        Ids of the matched pairs (input ids, sorted by `matched_true`).
    matched_iou : (tp,) ndarray of float64
    """

    iou_threshold: float
    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    matched_true: np.ndarray
    matched_pred: np.ndarray
    matched_iou: np.ndarray


def _as_pair(true_labels, pred_labels, func):
    require_host(func, true_labels=true_labels, pred_labels=pred_labels)
    t = V.as_labels(true_labels, "true_labels", (2, 3))
    p = V.as_labels(pred_labels, "pred_labels", (2, 3))
    if t.shape != p.shape:
        raise ValueError(f"true_labels and pred_labels must have the same shape; got "
                         f"{t.shape} and {p.shape}")
    if t.ndim == 2:
        t, p = t[None], p[None]
    dtypes = tuple(np.asarray(v).dtype for v in (true_labels, pred_labels))
    return t, p, tuple(np.uint8 if d == np.bool_ else d.newbyteorder("=") for d in dtypes)


def _ious(t, p):
    """Compact overlap table: (ids_t, ids_p, first, second, iou) of overlapping pairs."""
    from ._cpu.labels import compact_labels
    from ._cpu.metrics import overlap_counts

    ct, ids_t = compact_labels(t)
    cp, ids_p = compact_labels(p)
    first, second, inter = overlap_counts(ct.ravel(), cp.ravel(), ids_t.size, ids_p.size)
    size_t = np.bincount(ct.ravel(), minlength=ids_t.size + 1)
    size_p = np.bincount(cp.ravel(), minlength=ids_p.size + 1)
    iou = inter / (size_t[first] + size_p[second] - inter)
    return ids_t, ids_p, first, second, iou


@host_tensors("true_labels", "pred_labels")
def instance_ious(true_labels, pred_labels):
    """IoU of every pair of overlapping instances.

    Parameters
    ----------
    true_labels, pred_labels : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background; same shape.

    Returns
    -------
    true_ids, pred_ids : (P,) ndarray
        The ids of each overlapping pair (dtype of the inputs), sorted by true id.
    iou : (P,) ndarray of float64
        ``|T & P| / |T | P|`` of each pair.

    Raises
    ------
    TypeError, ValueError
        On non-integer or negative ids, a wrong dimension or different shapes.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1, 1, 1, 1, 0, 2, 2]])
    >>> p = np.array([[5, 5, 5, 0, 0, 5, 5]])
    >>> instance_ious(t, p)
    (array([1, 2]), array([5, 5]), array([0.5, 0.4]))
    """
    t, p, (dt, dp) = _as_pair(true_labels, pred_labels, "instance_ious")
    ids_t, ids_p, first, second, iou = _ious(t, p)
    return ids_t[first - 1].astype(dt), ids_p[second - 1].astype(dp), iou


def _assign(first, second, iou):
    """Indices of a maximum-cardinality, then maximum-IoU, one-to-one subset of pairs."""
    from scipy.optimize import linear_sum_assignment

    _, inv_a, deg_a = np.unique(first, return_inverse=True, return_counts=True)
    _, inv_b, deg_b = np.unique(second, return_inverse=True, return_counts=True)
    alone = (deg_a[inv_a] == 1) & (deg_b[inv_b] == 1)
    chosen = [np.flatnonzero(alone)]
    rest = np.flatnonzero(~alone)
    if rest.size:
        rows, r_idx = np.unique(first[rest], return_inverse=True)
        cols, c_idx = np.unique(second[rest], return_inverse=True)
        big = float(min(rows.size, cols.size) + 1)  # cardinality first, then IoU
        gain = np.zeros((rows.size, cols.size))
        which = np.full((rows.size, cols.size), -1, np.int64)
        gain[r_idx, c_idx] = big + iou[rest]
        which[r_idx, c_idx] = rest
        r, c = linear_sum_assignment(gain, maximize=True)
        picked = which[r, c]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


@host_tensors("true_labels", "pred_labels")
def matching(true_labels, pred_labels, iou_threshold: float = 0.5) -> Matching:
    """Match true and predicted instances one-to-one at an IoU threshold.

    A true instance T and a predicted instance P may match when
    ``IoU(T, P) >= iou_threshold``. For thresholds above 0.5 every instance
    has at most one such partner; otherwise (and at exactly 0.5, where an
    instance split in two equal halves has two partners) the matching with
    the most pairs, then the largest total IoU, is taken
    (``scipy.optimize.linear_sum_assignment`` on the conflicting pairs only).

    Parameters
    ----------
    true_labels, pred_labels : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background; same shape. Ids need not be contiguous.
    iou_threshold : float, default 0.5
        In (0, 1].

    Returns
    -------
    result : Matching
        Counts, precision, recall, F1 and the matched pairs.

    Raises
    ------
    TypeError, ValueError
        On invalid labels (see `instance_ious`) or a threshold outside (0, 1].

    Notes
    -----
    Cost: two compactions and one contingency count over the voxels,
    O(voxels + instances), plus the assignment of conflicting pairs.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1, 1, 1, 1, 0, 2, 2, 0, 3]])
    >>> p = np.array([[7, 7, 7, 0, 0, 9, 9, 9, 0]])
    >>> m = matching(t, p)
    >>> m.tp, m.fp, m.fn, round(m.f1, 3)
    (2, 0, 1, 0.8)
    """
    t, p, (dt, dp) = _as_pair(true_labels, pred_labels, "matching")
    thr = V.check_real(iou_threshold, "iou_threshold")
    if not 0.0 < thr <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1]; got {thr}")
    ids_t, ids_p, first, second, iou = _ious(t, p)
    cand = np.flatnonzero(iou >= thr)
    first, second, iou = first[cand], second[cand], iou[cand]
    keep = _assign(first, second, iou) if cand.size else cand
    first, second, iou = first[keep], second[keep], iou[keep]
    n_t, n_p, tp = int(ids_t.size), int(ids_p.size), int(keep.size)

    def ratio(num, den):
        return num / den if den else 1.0

    return Matching(
        iou_threshold=thr, n_true=n_t, n_pred=n_p, tp=tp, fp=n_p - tp, fn=n_t - tp,
        precision=ratio(tp, n_p), recall=ratio(tp, n_t), f1=ratio(2 * tp, n_t + n_p),
        mean_matched_iou=float(iou.mean()) if tp else 0.0,
        matched_true=ids_t[first - 1].astype(dt), matched_pred=ids_p[second - 1].astype(dp),
        matched_iou=iou,
    )


@host_tensors("true_labels", "pred_labels")
def f1_score(true_labels, pred_labels, iou_threshold: float = 0.5) -> float:
    """F1 of the instance matching at `iou_threshold` (see `matching`).

    Returns
    -------
    f1 : float
        ``2 tp / (n_true + n_pred)``; 1.0 when both volumes are empty.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[0, 1, 1, 0, 2]])
    >>> f1_score(labels, labels * 3)
    1.0
    """
    return matching(true_labels, pred_labels, iou_threshold).f1
