import numpy as np
import pytest

from cvlm.frames import (
    DEFAULT_THRESHOLD,
    PAPER_THRESHOLD,
    extract_frames,
    normalise,
    otsu_threshold,
    scale_frames,
)
from cvlm.outputs import Frame


def _two_blobs() -> np.ndarray:
    d = np.zeros((64, 64), np.float32)
    d[5:15, 5:15] = 1.0  # 100 px
    d[30:50, 20:50] = 0.8  # 600 px, fainter but larger
    return d


def test_two_known_blobs_give_two_frames_largest_first():
    result = extract_frames(_two_blobs(), threshold=95, blur=1)
    assert [f.box for f in result.frames] == [[20, 30, 50, 50], [5, 5, 15, 15]], result.frames
    assert [f.area for f in result.frames] == [600, 100], result.frames
    assert result.mask.sum() == 700


def test_blur_grows_regions_only_a_little_and_keeps_the_order():
    result = extract_frames(_two_blobs(), threshold=95)
    boxes = [f.box for f in result.frames]
    assert len(boxes) == 2, boxes
    (x0, y0, x1, y1), small = boxes
    assert abs(x0 - 20) <= 2 and abs(y0 - 30) <= 2 and abs(x1 - 50) <= 2 and abs(y1 - 50) <= 2, boxes
    assert small[0] >= 3 and small[2] <= 17, boxes


def test_top_k_keeps_the_k_largest_and_drops_specks():
    d = np.zeros((64, 64), np.float32)
    sizes = [2, 3, 4, 5, 6, 7, 8]
    x = 1
    for s in sizes:
        d[1 : 1 + s, x : x + s] = 1.0
        x += s + 2
    d[60, 60] = 1.0  # a single-pixel speck, below min_area
    result = extract_frames(d, threshold=50, top_k=5, blur=1)
    assert [f.area for f in result.frames] == [64, 49, 36, 25, 16], result.frames


def test_threshold_is_relative_to_the_strongest_change():
    # The same shapes at a hundredth of the amplitude give the same frames: L is a share of the peak.
    a = extract_frames(_two_blobs(), threshold=95, blur=1)
    b = extract_frames(_two_blobs() * 0.01, threshold=95, blur=1)
    assert [f.box for f in a.frames] == [f.box for f in b.frames]


def test_auto_threshold_splits_two_levels():
    d = np.zeros((32, 32), np.float32)
    d[8:24, 8:24] = 1.0
    d += 0.05
    level = otsu_threshold(normalise(d, blur=1))
    assert 12 <= level < 255, level  # the two levels are 12 (0.05 / 1.05 * 255) and 255
    result = extract_frames(d, threshold="auto", blur=1)
    assert [f.box for f in result.frames] == [[8, 8, 24, 24]], result.frames


def test_default_level_keeps_a_changes_fainter_rim_and_the_mask_follows_a_thin_line():
    # A change that fades from its core to its edge (an effusion's meniscus) and a thin diagonal line (a
    # tube): at the default L the frame mask holds the faint rim the paper's L drops, and it follows the
    # line where its box is mostly empty.
    from cvlm.metrics import iou, mask_from_boxes

    yy, xx = np.mgrid[:64, :64]
    blob = np.clip(1.0 - np.hypot(yy - 20, xx - 20) / 15, 0, None)  # 1 at the centre, 0.2 at r = 12
    truth = np.hypot(yy - 20, xx - 20) <= 12
    default = extract_frames(blob, blur=1)
    paper = extract_frames(blob, threshold=PAPER_THRESHOLD, blur=1)
    assert default.threshold == DEFAULT_THRESHOLD
    got = iou(default.mask, truth), iou(paper.mask, truth)
    assert got[0] > 0.85 and got[1] < 0.65, got
    line = np.zeros((64, 64), np.float32)
    for i in range(8, 56):
        line[i, i : i + 2] = 1.0
    found = extract_frames(line, blur=1)
    boxes = mask_from_boxes([f.box for f in found.frames], line.shape)
    got = iou(found.mask, line > 0), iou(boxes, line > 0)
    assert got[0] == 1.0 and got[1] < 0.1, got


def test_nothing_changed_gives_no_frame():
    result = extract_frames(np.zeros((16, 16), np.float32))
    assert result.frames == [] and not result.mask.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 300}, "threshold"),
        ({"threshold": "median"}, "threshold"),
        ({"top_k": 0}, "top_k"),
        ({"blur": 4}, "blur"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_frames(_two_blobs(), **kwargs)


def test_bad_maps_are_refused():
    with pytest.raises(ValueError, match="finite"):
        extract_frames(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="finite"):
        extract_frames(np.zeros((2, 8, 8)))


def test_frames_map_back_to_the_original_image_size():
    frames = scale_frames([Frame([10, 20, 30, 40], 200)], (128, 128), (2048, 1024))
    assert frames == [Frame([80, 320, 240, 640], 25600)]
    clipped = scale_frames([Frame([120, 120, 128, 128], 64)], (128, 128), (100, 100))
    assert clipped[0].box == [93, 93, 100, 100]


def test_calibrate_thresholds_fits_a_level_per_finding_seen_often_enough():
    from cvlm.frames import CALIBRATION_GRID, calibrate_thresholds

    yy, xx = np.mgrid[:48, :48]
    r = np.hypot(yy - 24, xx - 24)
    truth = r <= 6
    compact = np.where(truth, 1.0, np.where(r <= 14, 0.25, 0.0)).astype(np.float32)  # a sign with a halo
    diffuse = np.where(r <= 14, 0.12, 0.0).astype(np.float32)  # a faint change over its whole extent
    diffuse[r <= 3] = 1.0
    wide = r <= 14
    cases = (
        [("Atelectasis", compact, truth)] * 8
        + [("Edema", diffuse, wide)] * 8
        + [("Fracture", compact, truth)] * 2
    )
    got = calibrate_thresholds(cases)
    print(got)
    assert got["per_finding"]["Atelectasis"] > DEFAULT_THRESHOLD  # cuts the halo
    assert got["per_finding"]["Edema"] < DEFAULT_THRESHOLD  # reaches the faint rim
    assert "Fracture" not in got["per_finding"] and got["n"]["Fracture"] == 2  # too few: the default
    assert got["iou"]["Fracture"]["chosen"] == got["iou"]["Fracture"]["default"]
    for finding in ("Atelectasis", "Edema"):
        assert got["iou"][finding]["chosen"] >= got["iou"][finding]["default"] + 0.01, got["iou"]
        assert got["per_finding"][finding] in CALIBRATION_GRID
    assert got["n_cases"] == 18 and got["iou_chosen"] > got["iou_default"]
    # A finding whose best level gains less than min_gain keeps the default.
    assert calibrate_thresholds(cases, min_gain=1.0)["per_finding"] == {}


def test_frame_thresholds_read_from_a_model_folder(tmp_path):
    import json

    from cvlm.frames import FRAMES_FILE, FrameThresholds

    assert FrameThresholds.read(tmp_path)("Edema") == DEFAULT_THRESHOLD  # no file: the default
    (tmp_path / FRAMES_FILE).write_text(json.dumps({"default": 40, "per_finding": {"Atelectasis": 95}}))
    levels = FrameThresholds.read(tmp_path)
    assert (levels("Atelectasis"), levels("Edema")) == (95.0, 40.0)
    assert levels.to_dict()["file"] == str(tmp_path / FRAMES_FILE)
    (tmp_path / FRAMES_FILE).write_text(json.dumps({"per_finding": {"Edema": 400}}))
    with pytest.raises(ValueError, match="Edema"):
        FrameThresholds.read(tmp_path)
