"""Shared fixtures: real camera files (fetched and pinned) and DNG files written with pidng."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fetch_camera_files import FetchError, OfflineError, fetch_camera_files

CAMERA_JPEG_NAMES = ("r_canon.jpg", "r_casio.jpg", "r_olympus.jpg", "r_pana.jpg",
                     "r_pen.jpg", "r_ricoh.jpg", "r_sigma.jpg", "r_sony.jpg")


@pytest.fixture(scope="session")
def camera_files() -> Path:
    """Folder with the real camera files of piexif 1.1.3's sdist, each SHA-256-verified.

    Fails (never skips) when they cannot be fetched, unless AGETRACE_OFFLINE=1.
    """
    try:
        return fetch_camera_files()
    except OfflineError as exc:
        reason, offline = str(exc), True
    except FetchError as exc:
        reason, offline = str(exc), False
    if offline:
        pytest.skip(reason)
    pytest.fail(f"real camera test files unavailable: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def camera_jpegs(camera_files: Path) -> dict[str, Path]:
    """The eight camera JPEGs (Canon, Casio, Olympus x2, Panasonic, Ricoh, Sigma, Sony) by name."""
    return {name: camera_files / name for name in CAMERA_JPEG_NAMES}


@pytest.fixture
def write_dng(tmp_path: Path):
    """Factory writing a CFA DNG with pidng: ``write_dng(mosaic, pattern='RGGB', ...) -> Path``.

    Parameters of the factory: `mosaic` (H×W uint16), `pattern` (a 4-letter Bayer pattern),
    `bits` (16, 14, 12, 10 or 8), `black_level` (int or four ints, one per 2×2 position),
    `white_level`, `name`, and EXIF-like `tags` ({pidng Tag name: value}). LibRaw refuses
    images with a side under 22 pixels, so use at least 32×32.
    """
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import DNGVersion, PhotometricInterpretation

    def write(mosaic: np.ndarray, pattern: str = "RGGB", *, bits: int = 16, black_level=0,
              white_level: int = 65535, name: str = "synthetic", tags: dict | None = None) -> Path:
        height, width = mosaic.shape
        dng_tags = DNGTags()
        dng_tags.set(Tag.ImageWidth, width)
        dng_tags.set(Tag.ImageLength, height)
        dng_tags.set(Tag.TileWidth, width)
        dng_tags.set(Tag.TileLength, height)
        dng_tags.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
        dng_tags.set(Tag.SamplesPerPixel, 1)
        dng_tags.set(Tag.BitsPerSample, bits)
        dng_tags.set(Tag.CFARepeatPatternDim, [2, 2])
        dng_tags.set(Tag.CFAPattern, ["RGB".index(letter) for letter in pattern])
        if np.ndim(black_level):
            dng_tags.set(Tag.BlackLevelRepeatDim, [2, 2])
            dng_tags.set(Tag.BlackLevel, [int(level) for level in black_level])
        else:
            dng_tags.set(Tag.BlackLevel, int(black_level))
        dng_tags.set(Tag.WhiteLevel, white_level)
        dng_tags.set(Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]])
        dng_tags.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
        dng_tags.set(Tag.DNGVersion, DNGVersion.V1_4)
        for tag_name, value in (tags or {}).items():
            dng_tags.set(getattr(Tag, tag_name), value)
        converter = RAW2DNG()
        converter.options(dng_tags, path="", compress=False)
        return Path(converter.convert(np.ascontiguousarray(mosaic, dtype=np.uint16),
                                      filename=str(tmp_path / name)))

    return write


#: A small synthetic dataset (4 devices of 256×192 images, 16 per class) shared by the
#: whole-run tests; its images are read-only (tests that damage files copy them first).
SMALL_DATASET = {f"models.{m}.{k}": v for m in ("alpha", "beta", "gamma") for k, v in (("width", 256), ("height", 192))}
SMALL_DATASET["capture.images_per_class"] = 16


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    from pipeline.sim import default_dataset

    return default_dataset(tmp_path_factory.mktemp("small-sim"), progress=False, workers=1, **SMALL_DATASET)


@pytest.fixture(scope="session")
def dating_camera(tmp_path_factory):
    """The dating tests' synthetic camera, fitted once through ``python -m pipeline.date`` for the
    whole session (shared by test_dating_model.py and test_dating_report.py; see dating_camera.py).
    Read-only: tests that change files copy them first."""
    from dating_camera import build_dating_camera

    return build_dating_camera(tmp_path_factory)
