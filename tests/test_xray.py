import doctest
import logging
import pickle
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

import cvlm.xray
from cvlm.xray import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_SIDE,
    XrayReadError,
    XrayReadWarning,
    center_crop,
    from_tensor,
    read_xray,
    read_xray_dir,
    resize,
    to_imagenet_tensor,
    to_tensor,
    write_jpeg,
    write_png,
)

RG1 = get_testdata_file("RG1_UNCR.dcm")  # CR, PA chest, 1955x1841, 15-bit, MONOCHROME1


@pytest.fixture(scope="module")
def rg1() -> np.ndarray:
    return read_xray(RG1)


def _dicom(
    path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **elements
) -> Path:
    """A minimal DX DICOM file with the given stored pixels and extra elements."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric, bits)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _ramp(lo: int, hi: int, shape=(16, 16)) -> np.ndarray:
    return np.linspace(lo, hi, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


# --- real pixels --------------------------------------------------------------------------------------


def test_rg1_loads_upright_with_lungs_dark_and_bones_bright(rg1):
    assert rg1.shape == (1955, 1841) and rg1.dtype == np.float32
    assert 0.0 <= rg1.min() < rg1.max() <= 1.0
    h, w = rg1.shape

    def region(y0, y1, x0, x1):
        return float(rg1[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())

    # Regions checked against a downscaled PNG of the image (docs/xray.md): lung fields either side of
    # the spine, the spine / mediastinum column between them, the liver below the right hemidiaphragm.
    lung_right = region(0.25, 0.55, 0.15, 0.35)  # patient's right = image left
    lung_left = region(0.25, 0.55, 0.62, 0.82)
    spine = region(0.25, 0.55, 0.46, 0.54)
    liver = region(0.78, 0.88, 0.12, 0.35)
    assert max(lung_right, lung_left) < spine - 0.2  # polarity: lungs dark, bone bright
    assert lung_right < liver - 0.2  # upright: the dense abdomen is at the bottom
    # Not mirrored: the heart bulges to the image right (patient's left).
    heart = region(0.6, 0.72, 0.58, 0.72)
    mirror = region(0.6, 0.72, 0.28, 0.42)
    assert heart > mirror + 0.03


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path):
    stored = _ramp(100, 3000)
    m2 = read_xray(_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2"))
    m1 = read_xray(_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"))
    np.testing.assert_allclose(m1, 1 - m2, atol=1e-6)
    assert m2[0, 0] == 0.0 and m2[-1, -1] == 1.0  # no VOI: min-max of the values


def test_bits_stored_masks_unused_high_bits(tmp_path):
    # 12 bits stored in 16 allocated, with junk (e.g. an overlay) in the 4 unused high bits.
    stored = _ramp(0, 4000)
    path = _dicom(tmp_path / "junk.dcm", stored, WindowCenter=2048, WindowWidth=4096)
    ds = pydicom.dcmread(path)
    ds.PixelData = (stored | 0xF000).astype("<u2").tobytes()
    ds.save_as(path)
    # Window c 2048, w 4096: (x - 2047.5) / 4095 + 0.5 = x / 4095.
    np.testing.assert_allclose(read_xray(path), stored / 4095, atol=1e-6)


def test_signed_pixels_without_window_use_min_max(tmp_path):
    stored = (_ramp(0, 2000).astype(np.int32) - 1000).astype(np.int16)
    img = read_xray(_dicom(tmp_path / "signed.dcm", stored, RescaleSlope=1, RescaleIntercept=-24))
    np.testing.assert_allclose(img, (stored + 1000) / 2000, atol=1e-6)


def test_rescale_then_window_hand_computed(tmp_path):
    # Modality LUT: x = 2 s - 1000. Window c = 1000, w = 2001 (DICOM PS3.3 C.11.2.1.2.1):
    # x <= -0.5 -> 0, x > 1999.5 -> 1, else (x - 999.5) / 2000 + 0.5.
    stored = np.zeros((16, 16), np.uint16)
    stored[0, :5] = [0, 500, 1000, 1500, 4095]
    path = _dicom(
        tmp_path / "w.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1000,
        WindowWidth=2001,
    )
    img = read_xray(path)
    np.testing.assert_allclose(img[0, :5], [0.0, 0.00025, 0.50025, 1.0, 1.0], atol=1e-6)


def test_voi_lut_sequence_preferred_over_window(tmp_path):
    lut = (np.arange(4096) ** 2 // 4095).astype(np.uint16)  # a gamma-like curve, output 0..4095
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = lut.astype("<u2").tobytes()  # OW, as scanners write it
    stored = np.zeros((16, 16), np.uint16)
    stored[0, :3] = [0, 2048, 4095]
    path = _dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[item], WindowCenter=10, WindowWidth=2)
    img = read_xray(path)
    np.testing.assert_allclose(img[0, :3], [0.0, lut[2048] / 4095, 1.0], atol=1e-6)


def test_jpeg2000_dicom_matches_uncompressed(rg1):
    np.testing.assert_array_equal(read_xray(get_testdata_file("RG1_J2KR.dcm")), rg1)


# --- bad DICOMs ---------------------------------------------------------------------------------------


def test_multiframe_dicom_refused(tmp_path):
    path = _dicom(tmp_path / "mf.dcm", np.stack([_ramp(0, 100)] * 2))
    with pytest.raises(XrayReadError, match=r"mf\.dcm.*multi-frame DICOM \(2 frames\)"):
        read_xray(path)


def test_dicom_without_pixels_refused(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "SR"
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(XrayReadError, match=r"sr\.dcm.*without pixel data"):
        read_xray(tmp_path / "sr.dcm")


def test_wrong_modality_refused_and_odd_body_part_warns(tmp_path):
    with pytest.raises(XrayReadError, match=r"modality 'CT' is not projection radiography"):
        read_xray(_dicom(tmp_path / "ct.dcm", _ramp(0, 100), Modality="CT"))
    with pytest.warns(XrayReadWarning, match=r"knee\.dcm: BodyPartExamined is 'KNEE'"):
        read_xray(_dicom(tmp_path / "knee.dcm", _ramp(0, 100), BodyPartExamined="KNEE"))
    with pytest.warns(XrayReadWarning, match="lateral view"):
        read_xray(_dicom(tmp_path / "lat.dcm", _ramp(0, 100), BodyPartExamined="CHEST", ViewPosition="LL"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_xray(_dicom(tmp_path / "pa.dcm", _ramp(0, 100), BodyPartExamined="CHEST", ViewPosition="PA"))


def test_colour_and_uniform_dicom_refused(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(XrayReadError, match="colour DICOM"):
        read_xray(_dicom(tmp_path / "rgb.dcm", rgb, "RGB", 8))
    with pytest.raises(XrayReadError, match="uniform"):
        read_xray(_dicom(tmp_path / "flat.dcm", np.full((16, 16), 7, np.uint16)))


def test_truncated_dicom_refused(tmp_path):
    data = Path(RG1).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(XrayReadError, match=r"cut\.dcm"):
        read_xray(tmp_path / "cut.dcm")


# --- bad files ----------------------------------------------------------------------------------------


def test_truncated_jpeg_refused(tmp_path):
    good = write_jpeg(np.random.default_rng(0).random((64, 64)), tmp_path / "good.jpg")
    data = good.read_bytes()
    for n, cut in enumerate([len(data) - 40, len(data) // 2, 200]):
        bad = tmp_path / f"bad{n}.jpg"
        bad.write_bytes(data[:cut])
        with pytest.raises(XrayReadError, match=rf"bad{n}\.jpg: corrupt or truncated JPG"):
            read_xray(bad)


def test_empty_missing_and_text_files_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(XrayReadError, match=r"empty\.png: the file is empty"):
        read_xray(tmp_path / "empty.png")
    with pytest.raises(XrayReadError, match="no such file"):
        read_xray(tmp_path / "missing.png")
    with pytest.raises(XrayReadError, match="not a regular file"):
        read_xray(tmp_path)
    (tmp_path / "notes.png").write_text("FINDINGS: no acute cardiopulmonary process.\n")
    with pytest.raises(XrayReadError, match=r"notes\.png: not an image file"):
        read_xray(tmp_path / "notes.png")
    (tmp_path / "notes.dcm").write_text("FINDINGS: no acute cardiopulmonary process.\n")
    with pytest.raises(XrayReadError, match=r"notes\.dcm: not a DICOM image"):
        read_xray(tmp_path / "notes.dcm")


def test_damaged_files_raise_only_the_project_error(tmp_path):
    # Seeded fuzzing: truncated or byte-flipped files of every format either read into the
    # convention or raise XrayReadError, never another exception type.
    rng = np.random.default_rng(4)
    img = rng.random((32, 32))
    tifffile.imwrite(tmp_path / "src.tif", (img * 65535).astype(np.uint16))
    sources = {
        "dcm": _dicom(tmp_path / "src.dcm", _ramp(0, 4000, (32, 32)), WindowCenter=2000, WindowWidth=4000),
        "png": write_png(img, tmp_path / "src.png", 16),
        "jpg": write_jpeg(img, tmp_path / "src.jpg"),
        "tif": tmp_path / "src.tif",
    }
    refused = {"truncated": 0, "flipped": 0}
    for ext, source in sources.items():
        data = source.read_bytes()
        for trial in range(40):
            kind = ("truncated", "flipped")[trial % 2]
            damaged = bytearray(data[: rng.integers(1, len(data))] if kind == "truncated" else data)
            for i in rng.integers(0, len(damaged), size=8 if kind == "flipped" else 0):
                damaged[i] = rng.integers(0, 256)
            path = tmp_path / f"damaged.{ext}"
            path.write_bytes(bytes(damaged))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    out = read_xray(path)
                except XrayReadError as e:
                    assert e.path == path
                    refused[kind] += 1
                else:
                    assert out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    # Every truncated file is caught; flipped bytes inside pixel data may still decode.
    assert refused["truncated"] == 80, refused
    assert refused["flipped"] > 0, refused


def test_too_small_images_refused(tmp_path):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    with pytest.raises(XrayReadError, match=r"dot\.png: image of 1x1 pixels is too small"):
        read_xray(tmp_path / "dot.png")
    Image.fromarray(np.zeros((MIN_SIDE - 1, 300), np.uint8)).save(tmp_path / "strip.png")
    with pytest.raises(XrayReadError, match="too small"):
        read_xray(tmp_path / "strip.png")


def test_error_is_a_picklable_value_error():
    err = XrayReadError("a/b.png", "the file is empty")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, str(again)) == (Path("a/b.png"), "the file is empty", str(err))


# --- PNG / JPEG / TIFF --------------------------------------------------------------------------------


def test_png_round_trips(tmp_path):
    img = np.random.default_rng(1).random((40, 30)).astype(np.float32)
    back16 = read_xray(write_png(img, tmp_path / "sub" / "x16.png", bits=16))
    assert Image.open(tmp_path / "sub" / "x16.png").mode == "I;16"
    assert np.abs(back16 - img).max() <= 0.5 / 65535 + 1e-7
    back8 = read_xray(write_png(img, tmp_path / "x8.png", bits=8))
    assert np.abs(back8 - img).max() <= 0.5 / 255 + 1e-7
    # Exact 16-bit levels come back exactly.
    levels = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 251
    Image.fromarray(levels).save(tmp_path / "levels.png")
    np.testing.assert_allclose(read_xray(tmp_path / "levels.png"), levels / 65535, atol=1e-7)


def test_jpeg_reads_close_to_source(tmp_path):
    img = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    back = read_xray(write_jpeg(img, tmp_path / "x.jpg"))
    assert back.shape == (64, 64) and np.abs(back - img).max() < 0.02


def test_rgb_and_rgba_converted_with_luma(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., :] = 200  # a grey pixel stays the same grey
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = read_xray(tmp_path / "rgb.png")
    assert img[1, 1] == pytest.approx(200 / 255, abs=1e-6)
    assert img[0, 0] == pytest.approx(0.299, abs=1e-6)
    rgba = np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_xray(tmp_path / "rgba.png"), img, atol=1e-6)


def test_twelve_bit_png_warns(tmp_path):
    Image.fromarray(_ramp(0, 4000)).save(tmp_path / "twelve.png")
    with pytest.warns(XrayReadWarning, match="12-bit"):
        read_xray(tmp_path / "twelve.png")


def test_tiff(tmp_path):
    levels = _ramp(0, 65535)
    tifffile.imwrite(tmp_path / "x.tif", levels)
    np.testing.assert_allclose(read_xray(tmp_path / "x.tif"), levels / 65535, atol=1e-7)
    tifffile.imwrite(tmp_path / "f.tiff", np.full((16, 16), 0.25, np.float32))
    assert read_xray(tmp_path / "f.tiff").mean() == pytest.approx(0.25)
    tifffile.imwrite(tmp_path / "hu.tif", np.full((16, 16), 300.0, np.float32))
    with pytest.raises(XrayReadError, match="outside \\[0, 1\\]"):
        read_xray(tmp_path / "hu.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    with pytest.raises(XrayReadError, match="TIFF with 3 pages"):
        read_xray(tmp_path / "stack.tif")


# --- folders ------------------------------------------------------------------------------------------


def test_directory_with_one_corrupt_file_reports_it_and_continues(tmp_path, caplog):
    rng = np.random.default_rng(2)
    for i in range(5):
        write_png(rng.random((20, 20)), tmp_path / "p10" / f"{i}.png")
    (tmp_path / "p10" / "2b.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (tmp_path / "p10" / "README.txt").write_text("not an image, not picked up")
    with caplog.at_level(logging.WARNING, logger="cvlm.xray"):
        results = list(read_xray_dir(tmp_path))
    names = [p.name for p, _ in results]
    assert names == ["0.png", "1.png", "2.png", "2b.jpg", "3.png", "4.png"]
    errors = [r for _, r in results if isinstance(r, XrayReadError)]
    assert len(errors) == 1 and errors[0].path.name == "2b.jpg"
    assert all(r.shape == (20, 20) for _, r in results if not isinstance(r, XrayReadError))
    assert "2b.jpg" in caplog.text
    assert list(read_xray_dir(tmp_path, recursive=False)) == []
    with pytest.raises(NotADirectoryError):
        list(read_xray_dir(tmp_path / "p10" / "0.png"))


# --- geometry and model ranges ------------------------------------------------------------------------


def test_resize_and_crop():
    img = np.kron(np.array([[0.0, 1.0], [0.5, 0.25]]), np.ones((4, 4))).astype(np.float32)
    np.testing.assert_allclose(resize(img, 2), [[0.0, 1.0], [0.5, 0.25]], atol=1e-6)  # area mean
    up = resize(img, (32, 24))
    assert up.shape == (32, 24) and up.min() >= 0 and up.max() <= 1
    np.testing.assert_array_equal(center_crop(img, (4, 2)), img[2:6, 3:5])
    with pytest.raises(ValueError, match="larger than the image"):
        center_crop(img, 9)
    with pytest.raises(ValueError, match="positive"):
        resize(img, (0, 4))


def test_write_png_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_png(np.full((4, 4), 1.5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="8 or 16"):
        write_png(np.zeros((4, 4)), tmp_path / "x.png", bits=12)


def test_tensor_round_trip_and_ranges():
    imgs = np.random.default_rng(3).random((2, 8, 6)).astype(np.float32)
    t = to_tensor(imgs)
    assert t.shape == (2, 1, 8, 6) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    np.testing.assert_allclose(from_tensor(t), imgs, atol=1e-6)
    t01 = to_tensor([imgs[0], imgs[1]], "zero_one")
    np.testing.assert_allclose(t01[:, 0].numpy(), imgs)
    np.testing.assert_allclose(from_tensor(t01[0], "zero_one"), imgs[0])
    assert from_tensor(to_tensor(imgs[0])).shape == (1, 8, 6)
    assert from_tensor(to_tensor(imgs[0])[0]).shape == (8, 6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_tensor(imgs * 255)
    with pytest.raises(ValueError, match="value_range"):
        to_tensor(imgs, "imagenet")
    with pytest.raises(ValueError, match="from_tensor"):
        from_tensor(torch.zeros(2, 3, 8, 8))


def test_imagenet_tensor():
    t = to_imagenet_tensor(np.full((2, 300, 250), 0.5, np.float32))
    assert t.shape == (2, 3, 224, 224)
    expected = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    np.testing.assert_allclose(t[1, :, 100, 100].numpy(), expected, rtol=1e-5)
    assert to_imagenet_tensor(np.zeros((16, 16)), size=32).shape == (1, 3, 32, 32)


def test_doctests():
    result = doctest.testmod(cvlm.xray, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
