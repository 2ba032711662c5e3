"""Image tasks on real images generated here: sizes, formats, filters, refusals."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from workloads import images
from workloads.errors import PermanentTaskError
from workloads.output import safe_name, write_atomic

pytestmark = pytest.mark.timeout(60)

LIMIT = 50_000_000


def make_image(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A picture with edges and gradients, so every filter has something to change."""
    width, height = size
    image = Image.new("RGB", size)
    pixels = image.load()
    assert pixels is not None
    for x in range(width):
        for y in range(height):
            pixels[x, y] = (x * 255 // width, y * 255 // height, (x * y) % 256)
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 30, 30), fill=(250, 250, 250))
    draw.ellipse((34, 10, 58, 40), fill=(10, 20, 200))
    draw.line((0, height - 1, width - 1, 0), fill=(0, 0, 0), width=2)
    if mode == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(size))
    return image.convert(mode)


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a size, with the start of one row of pixel data and nothing more."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


@pytest.fixture
def sample_png() -> bytes:
    return encoded(make_image())


def opened(path: str) -> Image.Image:
    image = Image.open(io.BytesIO(Path(path).read_bytes()))
    image.load()
    return image


# --- resize ------------------------------------------------------------------------------


def test_resize_keeps_aspect_ratio_within_the_box(sample_png: bytes, tmp_path: Path) -> None:
    result = images.resize_image(
        sample_png, width=32, height=32, out_dir=tmp_path, name="t1", max_pixels=LIMIT
    )
    assert (result.width, result.height, result.format) == (32, 24, "PNG")
    assert result.path == str(tmp_path / "t1.png")
    assert result.bytes == Path(result.path).stat().st_size
    written = opened(result.path)
    assert (written.size, written.format) == ((32, 24), "PNG")


def test_resize_exact_size_and_new_format(sample_png: bytes, tmp_path: Path) -> None:
    result = images.resize_image(
        sample_png,
        width=20,
        height=30,
        keep_aspect=False,
        output_format="JPEG",
        out_dir=tmp_path,
        name="t2",
        max_pixels=LIMIT,
    )
    written = opened(result.path)
    assert result.path.endswith("t2.jpg")
    assert (written.size, written.format, written.mode) == ((20, 30), "JPEG", "RGB")


def test_resize_can_enlarge(sample_png: bytes, tmp_path: Path) -> None:
    result = images.resize_image(
        sample_png, width=640, height=100, out_dir=tmp_path, name="big", max_pixels=LIMIT
    )
    assert opened(result.path).size == (133, 100)


def test_resize_keeps_the_source_format_by_default(tmp_path: Path) -> None:
    gif = encoded(make_image("P"), "GIF")
    result = images.resize_image(
        gif, width=32, height=24, out_dir=tmp_path, name="g", max_pixels=LIMIT
    )
    written = opened(result.path)
    assert (result.format, written.format, written.size) == ("GIF", "GIF", (32, 24))


def test_resize_output_over_the_pixel_limit_is_permanent(sample_png: bytes, tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"resized image would have 20000x20000"):
        images.resize_image(
            sample_png,
            width=20000,
            height=20000,
            keep_aspect=False,
            out_dir=tmp_path,
            name="huge",
            max_pixels=10_000,
        )
    assert not list(tmp_path.iterdir())


def test_resize_from_a_path_source(sample_png: bytes, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(sample_png)
    result = images.resize_image(
        images.image_source(str(source), None),
        width=16,
        height=16,
        out_dir=tmp_path / "out",
        name="p",
        max_pixels=LIMIT,
    )
    assert opened(result.path).size == (16, 12)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    make_image(size=(40, 20)).save(buffer, format="JPEG", exif=exif)
    result = images.convert_image(
        buffer.getvalue(), output_format="PNG", out_dir=tmp_path, name="o", max_pixels=LIMIT
    )
    assert (result.width, result.height) == (20, 40)


# --- convert -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ext"),
    [
        ("PNG", "png"),
        ("JPEG", "jpg"),
        ("WEBP", "webp"),
        ("GIF", "gif"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_convert_to_every_format(fmt: str, ext: str, mode: str, tmp_path: Path) -> None:
    source = encoded(make_image(mode))
    result = images.convert_image(
        source, output_format=fmt, out_dir=tmp_path, name="c", max_pixels=LIMIT
    )
    written = opened(result.path)
    assert result.path == str(tmp_path / f"c.{ext}")
    assert (written.format, written.size) == (fmt, (64, 48))
    assert (result.format, result.width, result.height) == (fmt, 64, 48)
    if fmt == "JPEG":
        assert written.mode == ("L" if mode == "L" else "RGB")


def test_jpeg_from_transparent_png_is_flattened_on_white(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    result = images.convert_image(
        encoded(clear), output_format="jpeg", out_dir=tmp_path, name="w", max_pixels=LIMIT
    )
    written = opened(result.path)
    assert written.mode == "RGB"
    red, green, blue = written.getpixel((4, 4))  # type: ignore[misc]
    assert min(red, green, blue) >= 250


def test_quality_changes_the_jpeg_size(sample_png: bytes, tmp_path: Path) -> None:
    low = images.convert_image(
        sample_png, output_format="JPEG", quality=5, out_dir=tmp_path, name="l", max_pixels=LIMIT
    )
    high = images.convert_image(
        sample_png, output_format="JPEG", quality=95, out_dir=tmp_path, name="h", max_pixels=LIMIT
    )
    assert low.bytes < high.bytes


def test_unknown_format_is_permanent(sample_png: bytes, tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"unsupported image format 'XCF'"):
        images.convert_image(
            sample_png, output_format="XCF", out_dir=tmp_path, name="x", max_pixels=LIMIT
        )


# --- filters -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", images.FILTERS)
def test_each_filter_changes_pixels(name: str, sample_png: bytes, tmp_path: Path) -> None:
    result = images.filter_image(
        sample_png, filter_name=name, out_dir=tmp_path, name=name, max_pixels=LIMIT
    )
    written = opened(result.path).convert("RGB")
    original = Image.open(io.BytesIO(sample_png)).convert("RGB")
    assert written.size == original.size
    assert ImageChops.difference(written, original).getbbox() is not None


def test_grayscale_gives_mode_l(sample_png: bytes, tmp_path: Path) -> None:
    result = images.filter_image(
        sample_png, filter_name="grayscale", out_dir=tmp_path, name="g", max_pixels=LIMIT
    )
    assert opened(result.path).mode == "L"


def test_filters_keep_transparency(tmp_path: Path) -> None:
    source = make_image("RGBA")
    result = images.filter_image(
        encoded(source), filter_name="emboss", out_dir=tmp_path, name="a", max_pixels=LIMIT
    )
    written = opened(result.path)
    assert written.mode == "RGBA"
    assert written.getchannel("A").tobytes() == source.getchannel("A").tobytes()


def test_blur_radius_matters(sample_png: bytes, tmp_path: Path) -> None:
    none = images.filter_image(
        sample_png, filter_name="blur", radius=0, out_dir=tmp_path, name="b0", max_pixels=LIMIT
    )
    strong = images.filter_image(
        sample_png, filter_name="blur", radius=8, out_dir=tmp_path, name="b8", max_pixels=LIMIT
    )
    original = Image.open(io.BytesIO(sample_png)).convert("RGB")
    assert ImageChops.difference(opened(none.path), original).getbbox() is None
    assert ImageChops.difference(opened(strong.path), original).getbbox() is not None


def test_unknown_filter_is_permanent(sample_png: bytes, tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"unknown filter 'sepia'"):
        images.filter_image(
            sample_png, filter_name="sepia", out_dir=tmp_path, name="s", max_pixels=LIMIT
        )


# --- sources and bad images --------------------------------------------------------------


def test_base64_and_data_url_sources(sample_png: bytes) -> None:
    text = base64.b64encode(sample_png).decode()
    assert images.image_source(None, text) == sample_png
    assert images.image_source(None, "data:image/png;base64," + text) == sample_png
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert images.image_source(None, wrapped) == sample_png
    urlsafe = base64.urlsafe_b64encode(sample_png).decode().rstrip("=")
    assert images.image_source(None, urlsafe) == sample_png


@pytest.mark.parametrize(
    ("path", "data", "given"), [(None, None, "neither"), ("a.png", "aGk=", "both")]
)
def test_exactly_one_source(path: str | None, data: str | None, given: str) -> None:
    with pytest.raises(
        PermanentTaskError, match=rf"exactly one of 'path' and 'data_base64'.*{given}"
    ):
        images.image_source(path, data)


def test_invalid_base64_is_permanent() -> None:
    with pytest.raises(PermanentTaskError, match=r"not valid base64"):
        images.image_source(None, "not*base64!")


def test_missing_file_is_permanent(tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"does not exist on the worker"):
        images.load_image(tmp_path / "nope.png", max_pixels=LIMIT)
    with pytest.raises(PermanentTaskError, match=r"is a directory"):
        images.load_image(tmp_path, max_pixels=LIMIT)


def test_truncated_png_is_permanent(sample_png: bytes, tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"PNG 64x48\) is corrupt or truncated"):
        images.resize_image(
            sample_png[: len(sample_png) // 2],
            width=10,
            height=10,
            out_dir=tmp_path,
            name="t",
            max_pixels=LIMIT,
        )
    assert not list(tmp_path.iterdir())


def test_random_bytes_are_permanent(tmp_path: Path) -> None:
    noise = bytes((i * 7919 + 13) % 256 for i in range(4096))
    with pytest.raises(PermanentTaskError, match=r"4096 bytes\) is not a PNG, JPEG, .* image"):
        images.convert_image(
            noise, output_format="PNG", out_dir=tmp_path, name="r", max_pixels=LIMIT
        )


def test_unsupported_input_format_is_permanent(tmp_path: Path) -> None:
    ppm = encoded(make_image(), "PPM")
    with pytest.raises(PermanentTaskError, match=r"is not a PNG, JPEG"):
        images.load_image(ppm, max_pixels=LIMIT)


def test_too_many_pixels_is_refused(sample_png: bytes) -> None:
    with pytest.raises(
        PermanentTaskError, match=r"64x48 = 3072 pixels, more than the limit of 3000"
    ):
        images.load_image(sample_png, max_pixels=3000)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    # 8000 x 8000 declared, no pixel data at all: the header alone must be enough to refuse.
    with pytest.raises(PermanentTaskError, match=r"64000000 pixels, more than the limit"):
        images.load_image(png_header_only(8000, 8000), max_pixels=LIMIT)


def test_decompression_bomb_is_permanent() -> None:
    with pytest.raises(PermanentTaskError, match=r"too large to decode safely"):
        images.load_image(png_header_only(60000, 60000), max_pixels=LIMIT)


# --- output files ------------------------------------------------------------------------


def test_a_retry_overwrites_its_output_cleanly(sample_png: bytes, tmp_path: Path) -> None:
    first = images.resize_image(
        sample_png, width=10, height=10, out_dir=tmp_path, name="same", max_pixels=LIMIT
    )
    second = images.resize_image(
        sample_png, width=20, height=20, out_dir=tmp_path, name="same", max_pixels=LIMIT
    )
    assert first.path == second.path
    assert [p.name for p in tmp_path.iterdir()] == ["same.png"]
    assert opened(second.path).size == (20, 15)


def test_write_atomic_leaves_no_temporary_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sub" / "x.bin"
    write_atomic(target, b"one")

    def failing_replace(src: str, dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("workloads.output.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"two")
    assert target.read_bytes() == b"one"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("task_id", ["../etc/passwd", "a/b", ".hidden", "", "x" * 201, "a..b"])
def test_unsafe_task_ids_are_refused(task_id: str) -> None:
    with pytest.raises(PermanentTaskError, match=r"cannot name an output file"):
        safe_name(task_id)


def test_uuid_task_ids_are_kept() -> None:
    assert (
        safe_name("0b5e8a4e-7d1c-4a43-a0c5-0f3c2b1d9e77") == "0b5e8a4e-7d1c-4a43-a0c5-0f3c2b1d9e77"
    )
