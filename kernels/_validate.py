"""Input checks shared by the public kernel functions.

Each helper returns an array the compiled kernels can take as is (C-contiguous, a supported
dtype) or raises ``TypeError`` / ``ValueError`` with a message that names the argument and
says what to do.
"""

import numpy as np

IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _dtype_hint(name, dtype):
    if dtype == np.bool_:
        return f"{name}.astype(np.uint8)"
    if np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2 and dtype.kind == "u":
        return f"{name}.astype(np.uint16)"
    return f"{name}.astype(np.float32)"


def check_image(image, name="image", ndims=(2, 3)):
    """Return ``image`` as a C-contiguous uint8/uint16/float32 array of an allowed rank.

    Parameters
    ----------
    image : array_like
        The pixels.
    name : str
        Argument name used in error messages.
    ndims : tuple of int
        Allowed numbers of dimensions.

    Returns
    -------
    numpy.ndarray
        ``image`` itself when already C-contiguous, otherwise a contiguous copy.

    Raises
    ------
    TypeError
        If the dtype is not uint8, uint16 or float32.
    ValueError
        If the rank is not allowed or the array is empty.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype not in IMAGE_DTYPES:
        raise TypeError(
            f"{name} has dtype {image.dtype}; the kernels take uint8, uint16 or float32 — "
            f"convert first, e.g. {_dtype_hint(name, image.dtype)}"
        )
    if image.ndim not in ndims:
        shapes = " or ".join({2: "H×W", 3: "H×W×C"}[n] for n in ndims)
        raise ValueError(f"{name} must be {shapes}, got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"{name} is empty (shape {image.shape}); pass at least one pixel")
    return np.ascontiguousarray(image)


def check_float32(array, name, shape=None):
    """Return ``array`` as a C-contiguous float32 array, optionally of a required shape."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise TypeError(f"{name} has dtype {array.dtype}; pass {name}.astype(np.float32)")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}; expected {tuple(shape)}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one value")
    return np.ascontiguousarray(array)


def check_out(out, shape, name="out"):
    """Return a float32 C-contiguous output buffer of ``shape`` (new when ``out`` is None)."""
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32:
        raise TypeError(f"{name} must be a float32 numpy array; allocate it with np.empty({shape}, np.float32)")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}; it must match the input, {tuple(shape)}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"{name} must be C-contiguous and writeable; allocate it with np.empty({shape}, np.float32)")
    return out


def raise_non_finite(array, name):
    """Raise the ``ValueError`` for an array known to hold NaN or inf, naming the first one."""
    index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
    raise ValueError(
        f"{name} contains NaN or inf (first at index {index}); replace them "
        f"(e.g. np.nan_to_num) or crop them away before computing residuals"
    )


def check_finite(array, name):
    """Raise ``ValueError`` if a float array holds NaN or inf."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise_non_finite(array, name)


def check_positions(shape, rows, cols, channels=None, name="positions"):
    """Validate pixel positions against an image shape and return them as int64 arrays.

    Parameters
    ----------
    shape : tuple of int
        Image shape, ``(H, W)`` or ``(H, W, C)``.
    rows, cols : array_like of int
        Row and column of each position, 1-D and of equal length.
    channels : array_like of int, optional
        Channel of each position; required for H×W×C images, not allowed for H×W ones.
    name : str
        Used in error messages.

    Returns
    -------
    tuple of numpy.ndarray
        ``(rows, cols, channels)`` as C-contiguous int64; ``channels`` is all zeros for
        H×W images.
    """
    arrays = {"rows": rows, "cols": cols}
    if channels is not None:
        if len(shape) != 3:
            raise ValueError(f"channels given for an H×W image (shape {shape}); leave channels=None")
        arrays["channels"] = channels
    elif len(shape) == 3:
        raise ValueError(
            f"the image is H×W×C (shape {shape}); give channels, e.g. channels=np.zeros_like(rows)"
        )
    out = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.size == 0 and value.ndim == 1:  # [] arrives as float64
            value = value.astype(np.int64)
        if value.dtype == np.bool_ or not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"{key} must hold integers, got dtype {value.dtype}")
        if value.ndim != 1:
            raise ValueError(f"{key} must be 1-D, got shape {value.shape}")
        out[key] = np.ascontiguousarray(value, dtype=np.int64)
    n = out["rows"].size
    for key, value in out.items():
        if value.size != n:
            raise ValueError(f"rows has {n} entries but {key} has {value.size}; give one per position")
    for axis, key in enumerate(out):
        value, size = out[key], shape[axis]
        bad = np.flatnonzero((value < 0) | (value >= size))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}: {key}[{i}] = {int(value[i])} is outside 0..{size - 1} "
                f"(image shape {shape}); drop or correct that position"
            )
    if "channels" not in out:
        out["channels"] = np.zeros(n, np.int64)
    return out["rows"], out["cols"], out["channels"]
