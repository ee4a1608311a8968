from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fitlens.data.images import ImageLoadError, load_rgb, preprocess


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_rgb(_save(rgba, tmp_path / "a.png")).getpixel((0, 0)) == (255, 255, 255)
    grey = Image.new("L", (10, 10), 77)
    assert load_rgb(_save(grey, tmp_path / "g.png")).getpixel((0, 0)) == (77, 77, 77)
    pal = Image.new("RGB", (10, 10), (10, 200, 30)).convert("P")
    assert load_rgb(_save(pal, tmp_path / "p.png")).mode == "RGB"
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))
    r, g, b = load_rgb(_save(cmyk, tmp_path / "c.jpg")).getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60
    deep = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    assert load_rgb(_save(deep, tmp_path / "d.png")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = _save(img, tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(path)
    assert out.size == (20, 40)
    assert sum(out.getpixel((10, 5))) > 600  # white is on top after rotation


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file"),
    (b"hello, I am text", "not an image"),
])
def test_bad_files_raise_with_the_file_name(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad file.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_rgb(path)
    assert "bad file.jpg" in str(info.value)


def test_truncated_jpeg(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    path = tmp_path / "t.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        load_rgb(path)


def test_decompression_bomb_guard(tmp_path: Path) -> None:
    path = _save(Image.new("L", (300, 300)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="decompression-bomb guard"):
        load_rgb(path, max_pixels=10_000)


def test_preprocess_is_resize_then_scale_chw(tmp_path: Path) -> None:
    img = Image.new("RGB", (50, 30), (255, 128, 0))
    x = preprocess(_save(img, tmp_path / "x.png"), 16)
    assert x.shape == (1, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 5, 5], [1.0, 128 / 255, 0.0], atol=1e-6)
