"""Image tasks on real images generated here: sizes, formats, filters, refusals."""

from __future__ import annotations

import base64
import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageDraw

from workloads import images
from workloads.errors import PermanentTaskError
from workloads.inputs import ImageFile
from workloads.output import safe_name, write_atomic

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 50_000_000
BYTES = 64 * 1024 * 1024


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


def chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk: length, kind, body and CRC."""
    crc = struct.pack(">I", zlib.crc32(kind + body))
    return struct.pack(">I", len(body)) + kind + body + crc


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a size, with the start of one row of pixel data and nothing more."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)


def png_bomb(width: int, height: int) -> bytes:
    """A real, complete grayscale PNG of `width` x `height` black pixels: tiny on disk, huge
    decoded (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def images_file(path: str, root: Path, max_bytes: int = BYTES) -> ImageFile:
    source = images.image_source(path, None, input_root=root, max_bytes=max_bytes)
    assert isinstance(source, ImageFile)
    return source


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
        images.image_source("in.png", None, input_root=tmp_path, max_bytes=BYTES),
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


def inline(data: str, max_bytes: int = BYTES) -> images.Source:
    return images.image_source(None, data, input_root=Path("/nonexistent"), max_bytes=max_bytes)


def test_base64_and_data_url_sources(sample_png: bytes) -> None:
    text = base64.b64encode(sample_png).decode()
    assert inline(text) == sample_png
    assert inline("data:image/png;base64," + text) == sample_png
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert inline(wrapped) == sample_png
    urlsafe = base64.urlsafe_b64encode(sample_png).decode().rstrip("=")
    assert inline(urlsafe) == sample_png
    assert inline(text, max_bytes=len(sample_png)) == sample_png, "the limit itself is allowed"


@pytest.mark.parametrize(
    ("path", "data", "given"), [(None, None, "neither"), ("a.png", "aGk=", "both")]
)
def test_exactly_one_source(path: str | None, data: str | None, given: str) -> None:
    with pytest.raises(
        PermanentTaskError, match=rf"exactly one of 'path' and 'data_base64'.*{given}"
    ):
        images.image_source(path, data, input_root=Path("."), max_bytes=BYTES)


def test_invalid_base64_is_permanent() -> None:
    with pytest.raises(PermanentTaskError, match=r"not valid base64"):
        inline("not*base64!")


def test_missing_file_is_permanent(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for path, why in [
        ("nope.png", "does not exist in the image input directory"),
        ("nope/x.png", "does not exist in the image input directory"),
        ("sub", "is a directory"),
        (".", "is a directory"),
        (str(tmp_path), "is a directory"),
    ]:
        with pytest.raises(PermanentTaskError, match=rf"^image {path!r} {why}$"):
            images.load_image(images_file(path, tmp_path), max_pixels=LIMIT)


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


# --- hostile paths and sizes (issue 9 item 6) --------------------------------------------


@pytest.fixture
def root(tmp_path: Path, sample_png: bytes) -> Path:
    """An input directory holding one real image, with outputs written beside it."""
    directory = tmp_path / "in"
    directory.mkdir()
    (directory / "ok.png").write_bytes(sample_png)
    return directory


def refusal(path: str, root: Path, max_bytes: int = BYTES) -> str:
    with pytest.raises(PermanentTaskError) as raised:
        images.convert_image(
            images_file(path, root, max_bytes),
            output_format="PNG",
            out_dir=root.parent / "out",
            name="t",
            max_pixels=LIMIT,
        )
    assert not (root.parent / "out").exists(), "nothing is written for a refused input"
    return str(raised.value)


OUTSIDE = "is not inside the worker's image input directory (SPECTASK_IMAGE_INPUT_ROOT)"


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/etc/shadow", "/proc/self/environ", "/dev/zero", "/", "/tmp"]
)
def test_absolute_paths_outside_the_root_are_refused_alike(path: str, root: Path) -> None:
    """One message for every outside path: existing or not, readable or not, no size."""
    message = refusal(path, root)
    assert message == f"image {path!r} {OUTSIDE}; give a path relative to it"
    missing = "/etc/spectask-no-such-file-" + "x" * (len(path) % 7)
    assert refusal(missing, root) == message.replace(repr(path), repr(missing))
    assert "bytes" not in message


@pytest.mark.parametrize(
    "path", ["../../../../etc/hostname", "../in/ok.png", "ok.png/../ok.png", "a/../../x"]
)
def test_dot_dot_is_refused_even_when_it_stays_inside(path: str, root: Path) -> None:
    assert refusal(path, root) == (
        f"image {path!r} must not contain '..' (SPECTASK_IMAGE_INPUT_ROOT confines it)"
    )


def test_symlinks_out_of_the_root_are_refused_alike(root: Path, tmp_path: Path) -> None:
    (root / "passwd.png").symlink_to("/etc/passwd")
    (root / "gone.png").symlink_to(tmp_path / "no-such-file")
    (root / "etc").symlink_to("/etc")
    (root / "up").symlink_to("..")
    (tmp_path / "secret.png").write_bytes((root / "ok.png").read_bytes())  # a readable image
    for path in ["passwd.png", "gone.png", "etc/passwd", "etc/no-such-file", "up/secret.png"]:
        assert refusal(path, root) == f"image {path!r} {OUTSIDE}; give a path relative to it"


def test_paths_inside_the_root_work_relative_absolute_and_through_inner_links(
    root: Path,
) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "deep.png").write_bytes((root / "ok.png").read_bytes())
    (root / "alias.png").symlink_to("sub/deep.png")
    (root / "subdir").symlink_to("sub")
    for path in ["ok.png", str(root / "ok.png"), "./sub/deep.png", "alias.png", "subdir/deep.png"]:
        loaded = images.load_image(images_file(path, root), max_pixels=LIMIT)
        assert loaded.image.size == (64, 48)


def test_a_root_that_is_a_symlink_still_confines(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "link-to-in"
    link.symlink_to(root)
    assert images.load_image(images_file("ok.png", link), max_pixels=LIMIT).format == "PNG"
    assert refusal(str(tmp_path / "elsewhere.png"), link).endswith("give a path relative to it")


def test_a_missing_root_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PermanentTaskError, match=r"SPECTASK_IMAGE_INPUT_ROOT=.*does not exist"):
        images.load_image(images_file("ok.png", tmp_path / "absent"), max_pixels=LIMIT)


def test_special_files_inside_the_root_are_refused_without_reading(root: Path) -> None:
    fifo = root / "pipe.png"
    os.mkfifo(fifo)  # a plain open would wait for a writer forever
    assert refusal("pipe.png", root) == "image 'pipe.png' is not a regular file"
    assert refusal("zero", Path("/dev")) == "image 'zero' is not a regular file"


def test_a_file_over_the_byte_limit_is_refused_before_reading(root: Path) -> None:
    size = (root / "ok.png").stat().st_size
    assert refusal("ok.png", root, max_bytes=size - 1) == (
        f"image 'ok.png' is {size} bytes, more than the limit of {size - 1} bytes "
        "(SPECTASK_MAX_IMAGE_BYTES)"
    )


def test_the_read_is_bounded_where_the_size_lies() -> None:
    """/proc files say st_size 0 and still hold bytes: the read stops at the limit + 1."""
    proc = Path(os.path.realpath("/proc/self"))
    message = refusal("environ", proc, max_bytes=8)
    assert message == (
        "image 'environ' is larger than the limit of 8 bytes (SPECTASK_MAX_IMAGE_BYTES)"
    )


def test_an_empty_file_and_a_nul_are_refused(root: Path) -> None:
    (root / "empty.png").write_bytes(b"")
    assert refusal("empty.png", root) == "image 'empty.png' is an empty file"
    assert refusal("ok.png\x00.txt", root) == "image 'ok.png\\x00.txt' contains a NUL character"


def test_huge_base64_is_refused_before_decoding() -> None:
    text = "A" * (4 * 1024 * 1024)  # 3 MiB decoded
    with pytest.raises(PermanentTaskError) as raised:
        inline(text, max_bytes=1024 * 1024)
    assert str(raised.value) == (
        "inline image is 3145728 bytes, more than the limit of 1048576 bytes "
        "(SPECTASK_MAX_IMAGE_BYTES)"
    )
    padded = base64.b64encode(b"x" * 1025).decode()
    with pytest.raises(PermanentTaskError, match=r"is 1025 bytes, more than the limit of 1024"):
        inline(padded, max_bytes=1024)


def test_a_real_decompression_bomb_is_refused_before_decoding(root: Path) -> None:
    bomb = png_bomb(10_000, 8_000)  # 80 MB of pixels in under 100 KB
    assert len(bomb) < 100_000
    (root / "bomb.png").write_bytes(bomb)
    with pytest.raises(PermanentTaskError) as raised:
        images.filter_image(
            images_file("bomb.png", root),
            filter_name="blur",
            out_dir=root.parent / "out",
            name="b",
            max_pixels=LIMIT,
        )
    assert str(raised.value) == (
        "image 'bomb.png' has 10000x8000 = 80000000 pixels, more than the limit of 50000000 "
        "(SPECTASK_MAX_IMAGE_PIXELS)"
    )


_OUT_OF_MEMORY = """
import resource, sys
from pathlib import Path
from workloads import images
from workloads.errors import PermanentTaskError
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    images.convert_image(Path(sys.argv[1]).read_bytes(), output_format="PNG",
                         out_dir=Path(sys.argv[3]), name="m", max_pixels=10**9)
except PermanentTaskError as exc:
    print("permanent:", exc)
except BaseException as exc:
    print("other:", type(exc).__name__, exc)
else:
    print("decoded")
"""


def test_running_out_of_memory_is_permanent(tmp_path: Path) -> None:
    """A real MemoryError (an address-space limit in a child process) is not retried."""
    bomb = tmp_path / "big.png"
    bomb.write_bytes(png_bomb(8_000, 8_000))  # 64 MB decoded as L
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, workloads.images; print(open('/proc/self/statm').read().split()[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    pages = int(probe.stdout.strip())
    limit = pages * os.sysconf("SC_PAGE_SIZE") + 40 * 1024 * 1024  # room to run, not to decode
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_MEMORY, str(bomb), str(limit), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.stdout.strip() == (
        "permanent: inline image (PNG 8000x8000) needs more memory than this worker has; lower "
        "SPECTASK_MAX_IMAGE_PIXELS or give the worker more memory"
    ), done.stdout + done.stderr[-2000:]


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
