"""Decode image files to pixels: one reader for every solution that takes images.

:func:`load_image` decodes a file (or open binary stream) to a (C, H, W) uint8 array, grey or
colour, optionally resized; :func:`image_size` reads an image's size from its header. Every
failure is a :class:`~abyssal.core.errors.DataError` naming the file and what is wrong with it
(missing, empty, not an image, corrupt, truncated, too many pixels, grey where colour is
required).

Example:
    >>> load_image("scratch_1.png", size=32).shape  # doctest: +SKIP
    (1, 32, 32)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from abyssal.core.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
"""File name endings read as images (compared in lower case)."""


def load_image(
    path: str | Path | BinaryIO,
    *,
    size: int | None = None,
    channels: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode one image to uint8 pixels, grey or colour, optionally resized.

    EXIF orientation is applied. 16-bit and float grey images are stretched to 0..255 by the
    image's own range; palette images become grey or colour as their palette is; alpha is
    dropped; CMYK and YCbCr become RGB. A colour image whose three channels are identical counts
    as grey.

    Args:
        path: the image file, or an open binary file (encoded bytes, e.g. from a request).
        size: resize to (size, size) with bilinear filtering (antialiased when shrinking);
            ``None`` keeps the image's size.
        channels: ``None``: the image's own (1 grey, 3 colour); 1: colour is converted to grey
            (ITU-R 601-2 luma); 3: colour is required, a grey image is an error.
        name: what messages call the image (default: the path).

    Returns:
        The pixels.

    Shapes:
        (C, H, W) uint8, C = 1 or 3; (C, size, size) when ``size`` is given.

    Raises:
        DataError: names the file and why it cannot be used: missing, empty, not an image,
            corrupt, truncated, unreadable, or grey where colour is required.

    Example:
        >>> load_image("scratch_1.png", size=32).shape  # doctest: +SKIP
        (1, 32, 32)
    """
    stream = hasattr(path, "read")
    where = Path(name) if name is not None else Path("<image bytes>" if stream else path)
    check_size_channels(size, channels)
    img = _with_channels(_decode(path if stream else Path(path), where), channels, where)
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(img)
    return pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as :func:`load_image` sees it (EXIF orientation applied),
    read from its header without decoding the pixels.

    Raises:
        DataError: names the file and why it cannot be read.

    Example:
        >>> image_size("neu_det/IMAGES/crazing_1.jpg")  # doctest: +SKIP
        (200, 200)
    """
    path = Path(path)
    with _pillow_errors(path), Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def check_size_channels(size: int | None, channels: int | None) -> None:
    """ValueError unless ``size`` is None or >= 1 and ``channels`` None, 1 or 3."""
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")


@contextlib.contextmanager
def _pillow_errors(path: Path) -> Iterator[None]:
    """Turn what Pillow and the file system raise into a :class:`DataError` naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise DataError("no such image file", path=path) from None
    except IsADirectoryError:
        raise DataError("a folder, not an image file", path=path) from None
    except PermissionError:
        raise DataError("cannot be read (permission denied)", path=path) from None
    except Image.DecompressionBombError as e:
        raise DataError(f"too many pixels to decode safely ({e})", path=path) from None
    except UnidentifiedImageError:
        reason = "the file is empty (0 bytes)" if _empty(path) else "not an image Pillow can read"
        raise DataError(f"{reason} (a corrupt or misnamed file?)", path=path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if "truncat" in str(e).lower():
            reason = "the file is truncated: it ends before the image data does"
        else:
            reason = f"corrupt image data ({type(e).__name__}: {e})"
        raise DataError(f"{reason} (an interrupted copy or download?)", path=path) from None


def _empty(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.stat().st_size == 0
    return False


def _decode(source: Path | BinaryIO, where: Path) -> Image.Image:
    """The image, EXIF orientation applied, as 8-bit ``L`` (grey) or ``RGB`` (colour)."""
    with _pillow_errors(where), Image.open(source) as img:
        img.load()  # decode now: a truncated file raises here (LOAD_TRUNCATED_IMAGES stays off)
        if img.width < 1 or img.height < 1:
            raise DataError("the image has no pixels (zero width or height)", path=where)
        out = _eight_bit(ImageOps.exif_transpose(img))
    if out.mode == "RGB" and _identical_channels(np.asarray(out)):
        return out.getchannel(0)  # colour in name only
    return out


def _eight_bit(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;"):
        return Image.fromarray(_stretch(np.asarray(img)))
    if mode in ("1", "L", "LA", "La"):
        return img.convert("L")
    if mode in ("P", "PA") and ("transparency" in img.info or mode == "PA"):
        img = img.convert("RGBA")  # the palette's alpha, then dropped
    return img.convert("RGB")  # RGB, RGBA, CMYK, YCbCr, P (a grey palette is found later)


def _stretch(values: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit or float grey values stretched to 0..255 by their own range."""
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return np.zeros(v.shape, dtype=np.uint8)
    lo, hi = v[finite].min(), v[finite].max()
    scaled = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)


def _identical_channels(rgb: np.ndarray) -> bool:
    """(H, W, 3) pixels whose three channels are equal everywhere."""
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _with_channels(img: Image.Image, channels: int | None, path: Path) -> Image.Image:
    if channels == 1 and img.mode == "RGB":
        return img.convert("L")  # ITU-R 601-2 luma
    if channels == 3 and img.mode == "L":
        raise DataError(
            "this is a grey image; the model expects colour (3 channels): use colour images, "
            "or a model trained on grey images",
            path=path,
        )
    return img
