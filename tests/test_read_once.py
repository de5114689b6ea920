"""Reading a file once: decoding from bytes already read, into a reused buffer, and the same cache keys."""

import numpy as np
import pytest
from PIL import Image

from pipeline.data.imageio import read_image
from pipeline.features.cache import file_digest
from pipeline.features.extract import ScreenTask, SparseTask, screen_batch, sparse_batch


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = {}
    Image.fromarray(rgb).save(tmp_path / "rgb.jpg", quality=90, subsampling=0)
    Image.fromarray(rgb).save(tmp_path / "sub.jpg", quality=85)  # 4:2:0: fancy upsampling matters
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg", quality=90)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
    for name in ("rgb.jpg", "sub.jpg", "gray.jpg", "rgb.png", "gray16.png"):
        out[name] = tmp_path / name
    return out


@pytest.mark.parametrize("name", ["rgb.jpg", "sub.jpg", "gray.jpg", "rgb.png", "gray16.png"])
def test_decoding_the_bytes_read_gives_the_same_image(files, name):
    path = files[name]
    plain = read_image(path)
    buffer = np.full(10 ** 5, 7, np.uint8)
    again = read_image(path, data=path.read_bytes(), decode_into=buffer)
    np.testing.assert_array_equal(again.pixels, plain.pixels)
    assert again.pixels.dtype == plain.pixels.dtype and again.kind == plain.kind
    assert again.metadata == plain.metadata and again.frames == plain.frames and again.notes == plain.notes
    if name.endswith(".jpg"):
        assert np.shares_memory(again.pixels, buffer)  # decoded into the caller's buffer


def test_a_buffer_too_small_is_not_used_and_a_bad_one_is_refused(files):
    small = np.zeros(10, np.uint8)
    image = read_image(files["rgb.jpg"], decode_into=small)
    assert not np.shares_memory(image.pixels, small) and image.pixels.shape == (37, 53, 3)
    with pytest.raises(ValueError, match="decode_into"):
        read_image(files["rgb.jpg"], decode_into=np.zeros(10 ** 5, np.float32))


def test_passes_key_the_cache_by_the_file_digest_and_reuse_their_decode_buffer(files, tmp_path):
    from pipeline.features.cache import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    paths = (str(files["rgb.jpg"]), str(files["sub.jpg"]), str(files["rgb.jpg"]))
    result = screen_batch(ScreenTask(paths, None, cache))
    assert result.digests[paths[0]] == file_digest(paths[0]) and result.digests[paths[1]] == file_digest(paths[1])
    assert result.cache_hits == 1  # the third is the first's bytes
    entries = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "screen").rglob("*.npz"))
    assert entries == sorted({file_digest(p) for p in paths})
    fresh = screen_batch(ScreenTask(paths[:2], None))  # no cache: decoded again, into the reused buffer
    for path in paths[:2]:
        np.testing.assert_array_equal(fresh.records[path].exceed, result.records[path].exceed)
        np.testing.assert_array_equal(fresh.records[path].clipped, result.records[path].clipped)
    rows, cols, chans = np.array([0, 5, 36]), np.array([0, 9, 52]), np.array([0, 1, 2])
    sparse = sparse_batch(SparseTask(paths, rows, cols, chans, None, cache))
    np.testing.assert_array_equal(sparse.residuals[0], sparse.residuals[2])
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "sparse").rglob("*.npz")) == entries


def test_a_named_pipe_is_reported_not_read(tmp_path):
    import os

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    result = screen_batch(ScreenTask((str(fifo),), None))
    assert result.failures and "regular file" in result.failures[0][1] and str(fifo) not in result.digests


def test_the_jpeg_header_gives_the_frame_read_image_gives(tmp_path):
    from PIL import Image

    from pipeline.data.imageio import jpeg_frame, read_image
    from pipeline.features.extract import probe_device

    rng = np.random.default_rng(0)
    rgb, gray, png = tmp_path / "rgb.jpg", tmp_path / "gray.jpg", tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(rgb, quality=90)
    Image.fromarray(rng.integers(0, 256, (41, 29), dtype=np.uint8)).save(gray, quality=90)
    Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(png)
    for path in (rgb, gray, png):
        image = read_image(path)
        decoded = (tuple(image.pixels.shape[:2]), image.kind, int(image.bit_depth))
        assert probe_device(str(path)) == decoded
    assert jpeg_frame(rgb.read_bytes()) == ((37, 53), "rgb", 8)
    assert jpeg_frame(gray.read_bytes()) == ((41, 29), "gray", 8)
    assert jpeg_frame(png.read_bytes()) is None                      # not a JPEG: the caller decodes it
    assert jpeg_frame(b"\xff\xd8\xff\xe0 not a header") is None
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8), "CMYK").save(cmyk)
    assert jpeg_frame(cmyk.read_bytes()) is None                     # refused by read_image, with its reason
