"""X-ray input and the one pixel convention of cvlm.

**The convention.** Inside cvlm an X-ray is a ``numpy.ndarray`` of dtype ``float32``, shape ``(H, W)``,
values in ``[0, 1]``, in radiological display polarity: 0 is black (air, the lung fields), 1 is white
(bone, metal). Row 0 is the top of the image as a radiologist would hang it. Batches are ``(N, H, W)``.

This module is the only one that knows about bit depth, file formats, DICOM and the value ranges of
models; everything else converts at this boundary (:func:`to_tensor`, :func:`from_tensor`,
:func:`to_imagenet_tensor`) and never rescales pixels itself.

**Reading.** :func:`read_xray` detects the format from the file's bytes, not its name:

* PNG / JPEG / BMP (Pillow): 8-bit divided by 255, 16-bit by 65535; colour (RGB, RGBA, palette)
  converted with the ITU-R 601 luma weights, alpha dropped; EXIF orientation applied.
* TIFF (tifffile): uint8 / uint16 as above; float data must already lie in ``[0, 1]``.
* DICOM (pydicom 3): the stored values (masked to *BitsStored* by pydicom) go through the modality LUT
  (*RescaleSlope* / *RescaleIntercept* or a Modality LUT Sequence, ``apply_modality_lut``), then the
  first VOI LUT or *WindowCenter* / *WindowWidth* when present (``apply_voi_lut``), scaled by that
  transform's own output range; with no VOI transform, by the min and max of the image's values
  (*BitsStored* is often larger than the range a detector uses, so it is not used as the scale).
  *MONOCHROME1* is inverted; *PresentationLUTShape* is ignored because the DX and CR IODs pair
  ``INVERSE`` with MONOCHROME1 as a description, not a second inversion.

Refused, with :class:`XrayReadError` (file name and reason): a missing, empty, truncated or corrupt
file; a file that is not an image; a DICOM without pixel data, with several frames, in colour, or of a
modality that is not projection radiography (only CR, DX, DR, RG and OT, secondary capture, are
accepted; a DICOM without *Modality* is accepted); an image smaller than :data:`MIN_SIDE` pixels on a
side, or larger than :data:`MAX_PIXELS` in all (checked from the header, before decoding); non-finite
values. A DICOM whose *BodyPartExamined* is set and is not the chest, or whose view is
lateral, is read with an :class:`XrayReadWarning`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pydicom
import tifffile
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_PIXELS",
    "MIN_SIDE",
    "SUFFIXES",
    "XrayReadError",
    "XrayReadWarning",
    "center_crop",
    "from_tensor",
    "iter_xrays",
    "read_xray",
    "read_xray_dir",
    "readable",
    "resize",
    "to_imagenet_tensor",
    "to_tensor",
    "write_jpeg",
    "write_png",
]

logger = logging.getLogger(__name__)

MIN_SIDE = 16
"""Smallest accepted image side in pixels; anything smaller cannot be a usable radiograph."""

MAX_PIXELS = 64 * 1024 * 1024
"""Largest accepted image, in pixels (8192 x 8192); checked from the header, before any decoding.

The largest chest radiographs are about 4,300 x 4,300 (18 MP). A file whose header claims more is refused
rather than decoded: a 100,000 x 100,000 PNG of a few kilobytes (a decompression bomb) would otherwise need
tens of gigabytes. Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, 89 MP) only warns below 179 MP.
"""

SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
"""File name endings :func:`read_xray_dir` picks up (case-insensitive)."""

RADIOGRAPH_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "DR", "RG", "OT"})
"""DICOM *Modality* values accepted: computed / digital radiography, radiographic imaging, other."""

_CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TORSO", "RIB", "TÓRAX", "TORAX", "THORAC")
_LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"})
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses, kept in float so 16-bit colour is not rounded.
_LUMA = np.array([0.299, 0.587, 0.114])
# A 16-bit image whose brightest pixel is below this almost certainly holds 12-bit data.
_LOW_16BIT_MAX = 4096

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ValueRange = Literal["minus_one_one", "zero_one"]


class XrayReadError(ValueError):
    """A file could not be read as a chest X-ray; the message names the file and the reason.

    Attributes:
        path: The file.
        reason: What is wrong, without the file name.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # Keeps the error picklable (DataLoader workers send it between processes).
        return (type(self), (self.path, self.reason))


class XrayReadWarning(UserWarning):
    """A file was read but may not be what cvlm expects (not a chest, a lateral view, 12-bit data)."""


# --- reading -----------------------------------------------------------------------------------------


def read_xray(path: str | Path) -> np.ndarray:
    """Read one X-ray file into the cvlm pixel convention.

    Args:
        path: A PNG, JPEG, BMP, TIFF or DICOM file; the format is detected from its bytes.

    Returns:
        (H, W) float32 array in ``[0, 1]``, 0 black (air), 1 white (bone).

    Raises:
        XrayReadError: The file is missing, empty, corrupt, not an image, not a radiograph, too small
            or holds several frames; the message says which.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> img = read_xray(get_testdata_file("RG1_UNCR.dcm"))  # the pydicom-data package
        >>> img.shape, img.dtype
        ((1955, 1841), dtype('float32'))
    """
    path = Path(path)
    if not path.is_file():
        raise XrayReadError(path, "no such file" if not path.exists() else "not a regular file")
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError as e:
        raise XrayReadError(path, f"cannot open the file ({e})") from e
    if not head:
        raise XrayReadError(path, "the file is empty")

    has_preamble = head[128:132] == b"DICM"
    if has_preamble or path.suffix.lower() in (".dcm", ".dicom"):
        img = _read_dicom(path, has_preamble)
    elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        img = _read_tiff(path)
    else:
        img = _read_pillow(path)

    if img.ndim != 2:
        raise XrayReadError(path, f"expected one grayscale image, got an array of shape {img.shape}")
    if min(img.shape) < MIN_SIDE:
        raise XrayReadError(
            path, f"image of {img.shape[0]}x{img.shape[1]} pixels is too small (minimum {MIN_SIDE} per side)"
        )
    if not np.isfinite(img).all():
        raise XrayReadError(path, "the image holds NaN or infinite values")
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32)


def _read_pillow(path: Path) -> np.ndarray:
    """PNG, JPEG, BMP and other Pillow formats -> (H, W) float64 in [0, 1]."""
    try:
        with Image.open(path) as im:
            _check_size(path, im.height, im.width)  # from the header, before decoding
            im.load()  # decode now, so truncated data fails here rather than later
            fmt = im.format
            im = ImageOps.exif_transpose(im)
    except XrayReadError:
        raise
    except UnidentifiedImageError as e:
        raise XrayReadError(path, "not an image file (format not recognised)") from e
    except Image.DecompressionBombError as e:  # raised by Image.open itself above 179 MP
        raise XrayReadError(path, f"image too large to read safely ({e})") from e
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, EOFError, zlib.error...; chained
        raise XrayReadError(path, f"corrupt or truncated {_describe(path)} ({e})") from e
    if getattr(im, "n_frames", 1) > 1:
        raise XrayReadError(path, f"{fmt} file with {im.n_frames} frames; give one image per file")
    mode = im.mode
    # Pillow opens 16-bit grayscale PNG as "I;16" (older releases: "I", int32 holding 0..65535).
    if mode in ("I;16", "I;16B", "I;16L") or (mode == "I" and fmt == "PNG"):
        arr = np.asarray(im).astype(np.uint16)
        _warn_if_12_bit(path, arr)
        return arr / 65535.0
    if mode in ("L", "LA", "1"):
        return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    if mode in ("P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return (np.asarray(im.convert("RGB"), dtype=np.float64) @ _LUMA) / 255.0
    raise XrayReadError(path, f"unsupported {fmt} pixel mode {mode!r}; save it as 8- or 16-bit grayscale")


def _read_tiff(path: Path) -> np.ndarray:
    """TIFF -> (H, W) float64 in [0, 1]."""
    try:
        with tifffile.TiffFile(path) as tif:
            n_pages = len(tif.pages)
            shape = tif.pages[0].shape
            _check_size(path, *(shape[:2] if len(shape) >= 2 else (shape[0], 1)))
            arr = tif.asarray(key=0)
    except XrayReadError:
        raise
    except Exception as e:  # tifffile raises many types for broken files; keep the cause chained
        raise XrayReadError(path, f"corrupt or truncated TIFF ({e})") from e
    if n_pages > 1:
        raise XrayReadError(path, f"TIFF with {n_pages} pages; give one image per file")
    arr = np.squeeze(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        scale = _integer_scale(path, arr[..., :3])
        return (arr[..., :3].astype(np.float64) @ _LUMA) / scale
    if arr.ndim != 2:
        raise XrayReadError(path, f"TIFF holds an array of shape {arr.shape}, not one grayscale image")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise XrayReadError(path, "the image holds NaN or infinite values")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise XrayReadError(
                path, "floating-point TIFF with values outside [0, 1]; rescale it to [0, 1] or save as 16-bit"
            )
        return arr.astype(np.float64)
    if arr.dtype == np.uint16:
        _warn_if_12_bit(path, arr)
    return arr.astype(np.float64) / _integer_scale(path, arr)


def _integer_scale(path: Path, arr: np.ndarray) -> float:
    """Full-scale value of an unsigned integer image (255 for 8-bit, 65535 for 16-bit)."""
    if arr.dtype == np.bool_:
        return 1.0
    if arr.dtype not in (np.uint8, np.uint16):
        raise XrayReadError(path, f"unsupported pixel type {arr.dtype}; save it as 8- or 16-bit unsigned")
    return float(np.iinfo(arr.dtype).max)


def _warn_if_12_bit(path: Path, arr: np.ndarray) -> None:
    if arr.size and int(arr.max()) < _LOW_16BIT_MAX:
        warnings.warn(
            f"{path}: 16-bit image whose brightest pixel is {int(arr.max())} (< {_LOW_16BIT_MAX}); it looks "
            "like 12-bit data and will read almost black. Rescale it to the full 16-bit range.",
            XrayReadWarning,
            stacklevel=4,
        )


def _read_dicom(path: Path, has_preamble: bool) -> np.ndarray:
    """DICOM -> (H, W) float64 in [0, 1], display polarity."""
    # force=True reads DICOMs without the 128-byte preamble too; pydicom's complaints while guessing
    # the encoding are held back until the file turns out to hold an image, then re-issued with its name.
    # pydicom parses elements lazily, so the header fields are read here, where damage is caught.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path, force=True)
            has_pixels = "PixelData" in ds
            frames = int(ds.get("NumberOfFrames") or 1)
            samples = int(ds.get("SamplesPerPixel") or 1)
            modality, photometric, part, view = (
                str(ds.get(key) or "").upper()
                for key in ("Modality", "PhotometricInterpretation", "BodyPartExamined", "ViewPosition")
            )
        except Exception as e:  # a damaged header raises many types (struct.error, NotImplementedError...)
            raise XrayReadError(path, f"corrupt or unreadable DICOM header ({e})") from e
    if not has_pixels:
        if not has_preamble:
            raise XrayReadError(path, "not a DICOM image (no 'DICM' header and no pixel data)")
        raise XrayReadError(path, "DICOM without pixel data (not an image, e.g. a report or structure set)")
    for w in caught:
        warnings.warn(f"{path}: {w.message}", w.category, stacklevel=3)
    if frames > 1:
        raise XrayReadError(path, f"multi-frame DICOM ({frames} frames); cvlm reads one radiograph per file")
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise XrayReadError(
            path,
            f"DICOM modality {modality!r} is not projection radiography "
            f"(accepted: {', '.join(sorted(RADIOGRAPH_MODALITIES))})",
        )
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise XrayReadError(path, f"colour DICOM ({photometric or 'unknown'}); a radiograph is grayscale")
    _warn_if_not_chest_pa(path, part, view)
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    except Exception as e:  # not numbers (TypeError, ValueError), or a damaged VR (NotImplementedError)
        raise XrayReadError(path, f"corrupt DICOM header: Rows / Columns unreadable ({e})") from e
    _check_size(path, rows, columns)

    try:
        stored = ds.pixel_array
        values = apply_modality_lut(stored, ds)
        shown = apply_voi_lut(values, ds)
        if shown is values:
            lo, hi = float(np.min(values)), float(np.max(values))
        else:
            lo, hi = _voi_output_range(ds)
    except Exception as e:  # decoders and LUTs raise ValueError, RuntimeError, NotImplementedError...
        raise XrayReadError(path, f"cannot decode the DICOM pixel data ({e})") from e
    if hi <= lo:
        what = "image is uniform" if shown is values else "VOI LUT / window maps every value to one grey"
        raise XrayReadError(path, f"DICOM {what}; nothing to read")
    img = (np.asarray(shown, dtype=np.float64) - lo) / (hi - lo)
    return 1.0 - img if photometric == "MONOCHROME1" else img


def _voi_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The lowest and highest value the dataset's VOI transform can output.

    Found by passing the transform's whole input domain through ``apply_voi_lut`` itself, so pydicom
    keeps owning the arithmetic (window formulas, LUT descriptors, rescale of the output range).
    """
    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        n_entries, first, _ = (int(v) for v in seq[0].LUTDescriptor)
        probe = np.arange(first, first + (n_entries or 2**16), dtype=np.int64)
    else:
        # Far outside any window: the linear and sigmoid windows saturate at their output limits.
        probe = np.array([-1e12, 1e12])
    with np.errstate(over="ignore"):
        out = np.asarray(apply_voi_lut(probe, ds), dtype=np.float64)
    return float(out.min()), float(out.max())


def _warn_if_not_chest_pa(path: Path, part: str, view: str) -> None:
    if part and not any(word in part for word in _CHEST_WORDS):
        warnings.warn(
            f"{path}: BodyPartExamined is {part!r}, not the chest; cvlm's models expect chest radiographs.",
            XrayReadWarning,
            stacklevel=4,
        )
    if view in _LATERAL_VIEWS:
        warnings.warn(
            f"{path}: ViewPosition is {view!r}, a lateral view; cvlm's models expect frontal (PA/AP) views.",
            XrayReadWarning,
            stacklevel=4,
        )


def _check_size(path: Path, height: int, width: int) -> None:
    """Refuse an image whose header claims more than :data:`MAX_PIXELS` pixels."""
    if height * width > MAX_PIXELS:
        raise XrayReadError(
            path,
            f"image of {height}x{width} pixels is larger than cvlm reads ({MAX_PIXELS:,} pixels, e.g. "
            "8192x8192); downscale it first",
        )


def _describe(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return f"{suffix.upper()} file" if suffix else "image file"


def iter_xrays(paths: Iterable[str | Path]) -> Iterator[tuple[Path, np.ndarray | XrayReadError]]:
    """Read many files, yielding each one's image or the error that stopped it.

    A bad file is logged (``logging.WARNING``) and yielded as its :class:`XrayReadError`; iteration
    goes on, so one corrupt file in a thousand costs one image, not the run.

    Args:
        paths: Files to read, in the order to read them.

    Yields:
        ``(path, image)`` with an (H, W) float32 image, or ``(path, error)``.
    """
    for p in paths:
        p = Path(p)
        try:
            yield p, read_xray(p)
        except XrayReadError as e:
            logger.warning("skipping %s", e)
            yield p, e


def readable(paths: Iterable[str | Path]) -> tuple[list[int], list[XrayReadError]]:
    """Which files read as X-rays: their positions, and the errors of the others.

    For code that reads images later, in batches, but must drop the unreadable ones up front (the
    policy of every cvlm verb: skip the file, report it once, go on).

    Args:
        paths: Files to try, in order.

    Returns:
        ``(positions of the readable files, one XrayReadError per unreadable file)``.
    """
    good: list[int] = []
    errors: list[XrayReadError] = []
    for i, path in enumerate(paths):
        try:
            read_xray(path)
            good.append(i)
        except XrayReadError as err:
            errors.append(err)
    return good, errors


def read_xray_dir(
    directory: str | Path, recursive: bool = True
) -> Iterator[tuple[Path, np.ndarray | XrayReadError]]:
    """Read every X-ray file under a folder, in sorted path order (see :func:`iter_xrays`).

    Args:
        directory: The folder.
        recursive: Also look in sub-folders (MIMIC-CXR-JPG keeps images three levels down).

    Yields:
        ``(path, image or XrayReadError)`` for each file whose name ends in one of :data:`SUFFIXES`.

    Raises:
        NotADirectoryError: ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory}: not a folder of X-ray images")
    found = directory.rglob("*") if recursive else directory.iterdir()
    yield from iter_xrays(sorted(p for p in found if p.is_file() and p.suffix.lower() in SUFFIXES))


# --- writing -----------------------------------------------------------------------------------------


def _quantize(img: np.ndarray, bits: int) -> np.ndarray:
    """(H, W) image in [0, 1] -> uint8 or uint16 of the same shape (rounded to the nearest level)."""
    _check_image(img, "image to write")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}.")
    scale = 255 if bits == 8 else 65535
    return np.rint(np.asarray(img, dtype=np.float64) * scale).astype(np.uint8 if bits == 8 else np.uint16)


def write_png(img: np.ndarray, path: str | Path, bits: Literal[8, 16] = 8) -> Path:
    """Write an image in the cvlm convention as a grayscale PNG.

    Args:
        img: (H, W) float image with values in ``[0, 1]``.
        path: Output file; parent folders are created.
        bits: 8 or 16 bits per pixel. 16-bit keeps values to within 1/65535.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_quantize(img, bits)).save(path, format="PNG")
    return path


def write_jpeg(img: np.ndarray, path: str | Path, quality: int = 95) -> Path:
    """Write an image in the cvlm convention as an 8-bit grayscale JPEG (the MIMIC-CXR-JPG format).

    Args:
        img: (H, W) float image with values in ``[0, 1]``.
        path: Output file; parent folders are created.
        quality: JPEG quality, 1-95 (MIMIC-CXR-JPG's conversion used a high quality).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_quantize(img, 8)).save(path, format="JPEG", quality=int(quality))
    return path


# --- geometry ----------------------------------------------------------------------------------------


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as (H, W): an int means a square."""
    h, w = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if int(h) <= 0 or int(w) <= 0:
        raise ValueError(f"size must be positive, got {size}.")
    return int(h), int(w)


def _check_image(img: np.ndarray, what: str) -> None:
    if not isinstance(img, np.ndarray) or img.ndim != 2 or img.size == 0:
        shape = getattr(img, "shape", type(img).__name__)
        raise ValueError(f"{what}: need a non-empty (H, W) array, got {shape}.")
    if not np.isfinite(img).all() or img.min() < 0 or img.max() > 1:
        raise ValueError(f"{what}: values must be finite and in [0, 1] (the cvlm convention, see cvlm.xray).")


def resize(img: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Resize an image to ``size``, ignoring the aspect ratio (as R2Gen's ``Resize((224, 224))``).

    Downscaling averages pixel areas (``cv2.INTER_AREA``, no aliasing); upscaling interpolates
    bilinearly, which never leaves ``[0, 1]``.

    Args:
        img: (H, W) image.
        size: Output (H, W), or an int for a square.

    Returns:
        (size_h, size_w) float32 image.

    Example:
        >>> resize(np.ones((100, 60), np.float32), (50, 30)).shape
        (50, 30)
    """
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"resize: need a non-empty (H, W) image, got shape {img.shape}.")
    h, w = _size(size)
    if (h, w) == img.shape:
        return img.copy()
    shrink = h <= img.shape[0] and w <= img.shape[1]
    # cv2 takes (width, height).
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def center_crop(img: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Cut the central ``size`` region out of an image.

    Args:
        img: (H, W) image.
        size: Output (H, W), or an int for a square; not larger than the image.

    Returns:
        (size_h, size_w) view of ``img`` (copy it before writing into it).

    Example:
        >>> center_crop(np.arange(16).reshape(4, 4), 2)
        array([[ 5,  6],
               [ 9, 10]])
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"center_crop: need an (H, W) image, got shape {img.shape}.")
    h, w = _size(size)
    if h > img.shape[0] or w > img.shape[1]:
        raise ValueError(f"center_crop: crop {h}x{w} is larger than the image {img.shape[0]}x{img.shape[1]}.")
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    return img[top : top + h, left : left + w]


# --- model ranges ------------------------------------------------------------------------------------


def _stack(imgs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """(H, W), (N, H, W) or a sequence of (H, W) images of one size -> (N, H, W) float32, checked."""
    arr = np.asarray(imgs, dtype=np.float32) if not isinstance(imgs, np.ndarray) else imgs.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(f"need an (H, W) image or (N, H, W) images, got shape {arr.shape}.")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError("image values must be finite and in [0, 1] (the cvlm convention, see cvlm.xray).")
    return arr


def _check_range(value_range: str) -> None:
    if value_range not in ("minus_one_one", "zero_one"):
        raise ValueError(f"value_range must be 'minus_one_one' or 'zero_one', got {value_range!r}.")


def to_tensor(
    imgs: np.ndarray | Sequence[np.ndarray], value_range: ValueRange = "minus_one_one"
) -> torch.Tensor:
    """Images in the cvlm convention -> a model batch.

    Args:
        imgs: (H, W), (N, H, W), or a sequence of (H, W) images of one size, values in ``[0, 1]``.
        value_range: ``"minus_one_one"`` (VAE / diffusion models, ``2x - 1``) or ``"zero_one"``.

    Returns:
        (B, 1, H, W) float32 tensor on the CPU.

    Example:
        >>> to_tensor(np.array([[0.0, 0.5], [1.0, 0.25]])).tolist()
        [[[[-1.0, 0.0], [1.0, -0.5]]]]
    """
    _check_range(value_range)
    t = torch.from_numpy(np.ascontiguousarray(_stack(imgs)))[:, None]
    return t * 2 - 1 if value_range == "minus_one_one" else t


def from_tensor(t: torch.Tensor, value_range: ValueRange = "minus_one_one") -> np.ndarray:
    """A model batch -> images in the cvlm convention, clipped to ``[0, 1]``.

    Model outputs overshoot their range slightly; clipping here is the display conversion.

    Args:
        t: (B, 1, H, W) -> (B, H, W); (1, H, W) or (H, W) -> (H, W).
        value_range: The range ``t`` is in, as for :func:`to_tensor`.

    Returns:
        float32 array in ``[0, 1]``.

    Example:
        >>> from_tensor(torch.tensor([[-1.0, 0.0], [1.0, 3.0]])).tolist()
        [[0.0, 0.5], [1.0, 1.0]]
    """
    _check_range(value_range)
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    elif t.ndim == 3 and t.shape[0] == 1:
        t = t[0]
    elif t.ndim != 2:
        raise ValueError(f"from_tensor: need (B, 1, H, W), (1, H, W) or (H, W), got {tuple(t.shape)}.")
    x = t.detach().to("cpu", torch.float32)
    if value_range == "minus_one_one":
        x = (x + 1) / 2
    return x.clamp(0, 1).numpy()


def to_imagenet_tensor(imgs: np.ndarray | Sequence[np.ndarray], size: int = 224) -> torch.Tensor:
    """Images in the cvlm convention -> the input of an ImageNet-pretrained CNN (R2Gen's visual extractor).

    The grey image is resized to ``size`` x ``size`` (R2Gen's test transform, ``Resize((224, 224))``),
    copied to three channels (R2Gen opens images with ``convert('RGB')``) and normalised with the
    ImageNet mean and std.

    Args:
        imgs: (H, W), (N, H, W), or a sequence of (H, W) images of one size, values in ``[0, 1]``.
        size: Output side in pixels.

    Returns:
        (B, 3, size, size) float32 tensor.
    """
    arr = _stack(imgs)
    resized = np.stack([resize(img, size) for img in arr])
    t = torch.from_numpy(resized)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (t - mean) / std
