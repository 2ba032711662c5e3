"""Image processing with Pillow: load safely, resize, convert, filter, save atomically.

An image comes from a file below the worker's image input directory (`workloads.inputs`) or
from inline bytes (see `image_source`); both are capped in bytes before they are read or
decoded. Loading reads the header first and refuses images with more pixels than allowed
before anything is decoded. An image that cannot be read (not an image, truncated,
unsupported, too large) or that needs more memory than the worker has is a
`PermanentTaskError`: retrying cannot repair the bytes, and the same image needs the same
memory next time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError, features
from pydantic import BaseModel, ConfigDict

from generated import models
from workloads.errors import PermanentTaskError
from workloads.inputs import ImageFile, too_large
from workloads.output import write_atomic

FORMATS: Final = tuple(fmt.value for fmt in models.ImageFormat)
"""Formats images are read from and written to (Pillow's format names): the spec's ImageFormat."""

FILTERS: Final = ("grayscale", "blur", "sharpen", "edge_detect", "contour", "emboss")

EXTENSIONS: Final = {
    "PNG": "png",
    "JPEG": "jpg",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
}

_ALIASES: Final = {"JPG": "JPEG", "TIF": "TIFF", "MPO": "JPEG"}

# Modes each output format stores as is; an image in another mode is converted first.
_SAVE_MODES: Final = {
    "PNG": frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}),
    "JPEG": frozenset({"L", "RGB", "CMYK"}),
    "WEBP": frozenset({"RGB", "RGBA"}),
    "GIF": frozenset({"1", "L", "P", "RGB", "RGBA"}),  # Pillow builds the palette itself
    "BMP": frozenset({"1", "L", "P", "RGB", "RGBA"}),
    "TIFF": frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"}),
}

_GRAY_MODES: Final = frozenset({"1", "L", "LA", "La", "I", "I;16", "F"})

DEFAULT_QUALITY: Final = 90

_EXIF_ORIENTATION: Final = 0x0112


class ImageOutput(BaseModel):
    """An image written by a task."""

    model_config = ConfigDict(frozen=True)

    path: str
    width: int
    height: int
    format: str
    bytes: int


@dataclass(frozen=True, slots=True)
class SourceImage:
    """A decoded image and the format it was stored in."""

    image: Image.Image
    format: str


Source: TypeAlias = bytes | ImageFile
"""Inline bytes (already capped) or a file to read below the input directory."""


def image_source(
    path: str | None, data_base64: str | None, *, input_root: Path, max_bytes: int
) -> Source:
    """The image a task names: a file below `input_root` or inline base64 (exactly one).

    Either is refused beyond `max_bytes`: a file when it is opened, base64 before decoding.
    """
    if (path is None) == (data_base64 is None):
        given = "neither" if path is None else "both"
        raise PermanentTaskError(
            f"the image source must give exactly one of 'path' and 'data_base64', got {given}"
        )
    if path is not None:
        return ImageFile(path=path, root=input_root, max_bytes=max_bytes)
    assert data_base64 is not None
    return decode_base64(data_base64, max_bytes=max_bytes)


def decode_base64(data: str, *, max_bytes: int) -> bytes:
    """Bytes of base64 text (standard or URL-safe alphabet, whitespace and a data: URL allowed).

    The decoded size follows from the text's length, so text that would decode to more than
    `max_bytes` is refused before anything is decoded.
    """
    text = data.strip()
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise PermanentTaskError("image data_base64 is a data: URL that is not base64-encoded")
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    decoded_size = len(compact) // 4 * 3 - (len(compact) - len(compact.rstrip("=")))
    if decoded_size > max_bytes:
        raise too_large("inline image", max_bytes, decoded_size)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        raw = base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentTaskError(f"image data_base64 is not valid base64: {exc}") from exc
    if not raw:
        raise PermanentTaskError("image data_base64 decodes to no bytes")
    return raw


def read_source(source: Source) -> bytes:
    """The encoded image bytes (a file's read confined and capped by `ImageFile.read`)."""
    return source if isinstance(source, bytes) else source.read()


def _describe(source: Source) -> str:
    return "inline image" if isinstance(source, bytes) else source.label


def _out_of_memory(label: str) -> PermanentTaskError:
    return PermanentTaskError(
        f"{label} needs more memory than this worker has; lower SPECTASK_MAX_IMAGE_PIXELS "
        "or give the worker more memory"
    )


@contextlib.contextmanager
def memory_is_permanent(label: str) -> Iterator[None]:
    """A MemoryError inside is a permanent failure: the same image needs the same memory again.

    Left alone it would count as transient and be retried, three times the same allocation.
    """
    try:
        yield
    except MemoryError:
        raise _out_of_memory(label) from None


def load_image(source: Source, *, max_pixels: int) -> SourceImage:
    """Decode an image, refusing it before decoding if it has more than `max_pixels` pixels.

    EXIF orientation is applied, so the result is upright. Pillow's own decompression-bomb
    guard (`PIL.Image.MAX_IMAGE_PIXELS`) stays in force as a backstop.
    """
    data = read_source(source)
    label = _describe(source)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise PermanentTaskError(f"{label} is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise PermanentTaskError(
            f"{label} ({len(data)} bytes) is not a {', '.join(FORMATS)} image Pillow can read"
        ) from exc
    except MemoryError:
        raise _out_of_memory(label) from None
    except Exception as exc:
        raise PermanentTaskError(f"{label} cannot be opened as an image: {exc}") from exc

    width, height = image.size
    if width < 1 or height < 1:
        raise PermanentTaskError(f"{label} has an empty size {width}x{height}")
    if width * height > max_pixels:
        image.close()
        raise PermanentTaskError(
            f"{label} has {width}x{height} = {width * height} pixels, more than the limit "
            f"of {max_pixels} (SPECTASK_MAX_IMAGE_PIXELS)"
        )
    stored_format = _ALIASES.get(image.format or "", image.format or "PNG")
    try:
        image.load()
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        upright = image if orientation == 1 else ImageOps.exif_transpose(image)
    except MemoryError:
        raise _out_of_memory(f"{label} ({stored_format} {width}x{height})") from None
    except Exception as exc:
        raise PermanentTaskError(
            f"{label} ({stored_format} {width}x{height}) is corrupt or truncated: {exc}"
        ) from exc
    return SourceImage(image=upright, format=stored_format)


def normalize_format(name: str) -> str:
    """Pillow's name of an output format (case-insensitive; JPG and TIF accepted)."""
    upper = name.strip().upper()
    upper = _ALIASES.get(upper, upper)
    if upper not in FORMATS:
        raise PermanentTaskError(
            f"unsupported image format {name!r}; use one of {', '.join(FORMATS)}"
        )
    return upper


def fit_size(width: int, height: int, box_width: int, box_height: int) -> tuple[int, int]:
    """The largest size with the aspect ratio of `width` x `height` that fits the box."""
    scale = min(box_width / width, box_height / height)
    return (
        max(1, min(box_width, round(width * scale))),
        max(1, min(box_height, round(height * scale))),
    )


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or image.has_transparency_data


def _flatten(image: Image.Image) -> Image.Image:
    """The image composited over white (for formats without transparency)."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def prepare_for(image: Image.Image, fmt: str) -> Image.Image:
    """The image in a mode `fmt` can store (JPEG: RGB or L, transparency flattened on white)."""
    if image.mode in _SAVE_MODES[fmt]:
        return image
    gray = image.mode in _GRAY_MODES
    if fmt == "JPEG":
        flat = _flatten(image) if _has_alpha(image) else image.convert("RGB")
        return flat.convert("L") if gray else flat
    if _has_alpha(image) and "RGBA" in _SAVE_MODES[fmt]:
        return image.convert("RGBA")
    if gray and "L" in _SAVE_MODES[fmt]:
        return image.convert("L")
    return image.convert("RGB")


def encode(image: Image.Image, fmt: str, quality: int = DEFAULT_QUALITY) -> tuple[bytes, str]:
    """The image encoded as `fmt`, and the mode it was stored in."""
    fmt = normalize_format(fmt)
    if not 1 <= quality <= 100:
        raise PermanentTaskError(f"image quality must be between 1 and 100, got {quality}")
    prepared = prepare_for(image, fmt)
    params: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    if fmt == "TIFF" and features.check("libtiff"):
        params["compression"] = "tiff_lzw"
    buffer = io.BytesIO()
    prepared.save(buffer, format=fmt, **params)
    return buffer.getvalue(), prepared.mode


def save_image(
    image: Image.Image,
    *,
    fmt: str,
    out_dir: Path,
    name: str,
    quality: int = DEFAULT_QUALITY,
) -> ImageOutput:
    """Encode the image and write it atomically to `out_dir/<name>.<ext>`."""
    fmt = normalize_format(fmt)
    data, _mode = encode(image, fmt, quality)
    path = write_atomic(out_dir / f"{name}.{EXTENSIONS[fmt]}", data)
    return ImageOutput(
        path=str(path), width=image.width, height=image.height, format=fmt, bytes=len(data)
    )


def resize(
    image: Image.Image, width: int, height: int, *, keep_aspect: bool, max_pixels: int
) -> Image.Image:
    """The image resized to fit within `width` x `height` (keep_aspect) or to exactly that."""
    if width < 1 or height < 1:
        raise PermanentTaskError(f"resize target {width}x{height} must be at least 1x1")
    size = fit_size(image.width, image.height, width, height) if keep_aspect else (width, height)
    if size[0] * size[1] > max_pixels:
        raise PermanentTaskError(
            f"resized image would have {size[0]}x{size[1]} = {size[0] * size[1]} pixels, more "
            f"than the limit of {max_pixels} (SPECTASK_MAX_IMAGE_PIXELS)"
        )
    if size == image.size:
        return image.copy()
    if image.mode in ("1", "P"):
        # Pillow resizes these with nearest-neighbour only; resample the real colours instead.
        image = image.convert("L" if image.mode == "1" else "RGBA" if _has_alpha(image) else "RGB")
    return image.resize(size, Image.Resampling.LANCZOS)


def apply_filter(image: Image.Image, name: str, radius: float = 2.0) -> Image.Image:
    """The image with a filter applied; transparency is kept and not filtered.

    `radius` is the Gaussian blur radius for `blur` and the unsharp-mask radius for
    `sharpen` (radius 0 sharpens with Pillow's fixed SHARPEN kernel instead).
    """
    if name not in FILTERS:
        raise PermanentTaskError(f"unknown filter {name!r}; use one of {', '.join(FILTERS)}")
    if radius < 0:
        raise PermanentTaskError(f"filter radius must not be negative, got {radius}")
    alpha_present = _has_alpha(image)
    if name == "grayscale":
        return image.convert("LA" if alpha_present else "L")

    gray = image.mode in _GRAY_MODES
    base = image.convert(("L" if gray else "RGB") + ("A" if alpha_present else ""))
    alpha = base.getchannel("A") if alpha_present else None
    color = base.convert(base.mode[:-1]) if alpha_present else base

    kernel: ImageFilter.Filter
    if name == "blur":
        kernel = ImageFilter.GaussianBlur(radius)
    elif name == "sharpen":
        kernel = (
            ImageFilter.UnsharpMask(radius=radius, percent=150, threshold=0)
            if radius > 0
            else ImageFilter.SHARPEN()
        )
    elif name == "edge_detect":
        kernel = ImageFilter.FIND_EDGES()
    elif name == "contour":
        kernel = ImageFilter.CONTOUR()
    else:
        kernel = ImageFilter.EMBOSS()
    result = color.filter(kernel)
    if alpha is not None:
        result.putalpha(alpha)
    return result


def resize_image(
    source: Source,
    *,
    width: int,
    height: int,
    keep_aspect: bool = True,
    output_format: str | None = None,
    quality: int = DEFAULT_QUALITY,
    out_dir: Path,
    name: str,
    max_pixels: int,
) -> ImageOutput:
    """Resize an image and write it as `output_format` (default: the source's format)."""
    with memory_is_permanent(_describe(source)):
        loaded = load_image(source, max_pixels=max_pixels)
        fmt = normalize_format(output_format or loaded.format)
        resized = resize(
            loaded.image, width, height, keep_aspect=keep_aspect, max_pixels=max_pixels
        )
        return save_image(resized, fmt=fmt, out_dir=out_dir, name=name, quality=quality)


def convert_image(
    source: Source,
    *,
    output_format: str,
    quality: int = DEFAULT_QUALITY,
    out_dir: Path,
    name: str,
    max_pixels: int,
) -> ImageOutput:
    """Re-encode an image as `output_format` (`quality` applies to JPEG and WEBP)."""
    fmt = normalize_format(output_format)
    with memory_is_permanent(_describe(source)):
        loaded = load_image(source, max_pixels=max_pixels)
        return save_image(loaded.image, fmt=fmt, out_dir=out_dir, name=name, quality=quality)


def filter_image(
    source: Source,
    *,
    filter_name: str,
    radius: float = 2.0,
    output_format: str | None = None,
    quality: int = DEFAULT_QUALITY,
    out_dir: Path,
    name: str,
    max_pixels: int,
) -> ImageOutput:
    """Apply a filter and write the result as `output_format` (default: the source's format)."""
    with memory_is_permanent(_describe(source)):
        loaded = load_image(source, max_pixels=max_pixels)
        fmt = normalize_format(output_format or loaded.format)
        filtered = apply_filter(loaded.image, filter_name, radius)
        return save_image(filtered, fmt=fmt, out_dir=out_dir, name=name, quality=quality)
