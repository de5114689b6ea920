"""Photo-like test JPEGs for the benchmarks: a smooth scene with texture and sensor-like noise."""

import numpy as np
from PIL import Image


def write_photo_jpegs(folder, n_images, height, width, seed=0):
    """Write ``n_images`` RGB JPEGs (quality 92, 4:4:4) of ``height``×``width``; return their paths."""
    from skimage import data, transform

    rng = np.random.default_rng(seed)
    base = transform.resize(data.astronaut(), (height, width), order=1, preserve_range=True)
    paths = []
    for i in range(n_images):
        noisy = np.clip(np.roll(base, 37 * i, axis=1) + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"img_{i}.jpg"
        Image.fromarray(noisy).save(path, quality=92, subsampling=0)
        paths.append(str(path))
    return tuple(paths)
