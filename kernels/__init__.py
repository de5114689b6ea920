"""Numba kernels for defect-based image dating.

Pure functions on arrays (numpy and numba only, no file I/O):

* residuals ``W = Y - median3x3(Y)``: :func:`median_residual` (per channel),
  :func:`cfa_residual` (same-colour sites of a RAW mosaic), and the sparse
  :func:`sparse_residual` / :func:`sparse_cfa_residual` at given positions;
* noise levels: :func:`local_sigma` (map), :func:`local_sigma_at` (at positions, from the
  image), :func:`image_sigma` / :func:`residual_sigma` (per channel or CFA plane);
* clipping: :func:`clipped_neighbourhood`, :func:`clipped_at`;
* sparse per-image records: :func:`exceedances` (where ``W > k·σ``, and clipped elements);
* streaming statistics over many images: :class:`PixelStats`;
* defect candidates from time-ordered blocks: :func:`block_candidates`, :func:`split_scores`,
  :func:`score_threshold`;
* onsets: :func:`onset_changepoints`, :func:`onset_changepoint`, :func:`llr_threshold`.

Every compiled kernel is cached on disk (``cache=True``); the first call of each in a fresh
environment compiles it (seconds per kernel and dtype). The whole-image kernels run on
numba's thread pool (``NUMBA_NUM_THREADS`` / ``numba.set_num_threads``); all kernels release
the GIL, so they can also be called from several Python threads at once (for example next to
JPEG decoding threads).
"""

from kernels.candidates import (
    Candidates,
    block_candidates,
    score_threshold,
    split_scores,
)
from kernels.clipping import clipped_at, clipped_neighbourhood
from kernels.exceedance import exceedances
from kernels.noise import (
    MAD_SCALE,
    image_sigma,
    local_sigma,
    local_sigma_at,
    residual_sigma,
)
from kernels.onset import (
    Onset,
    Onsets,
    llr_threshold,
    onset_changepoint,
    onset_changepoints,
)
from kernels.residual import cfa_residual, median_residual
from kernels.sparse import sparse_cfa_residual, sparse_residual
from kernels.stats import PixelStats

__all__ = [
    "MAD_SCALE",
    "Candidates",
    "Onset",
    "Onsets",
    "PixelStats",
    "block_candidates",
    "cfa_residual",
    "clipped_at",
    "clipped_neighbourhood",
    "exceedances",
    "image_sigma",
    "llr_threshold",
    "local_sigma",
    "local_sigma_at",
    "median_residual",
    "onset_changepoint",
    "onset_changepoints",
    "residual_sigma",
    "score_threshold",
    "sparse_cfa_residual",
    "sparse_residual",
    "split_scores",
]
