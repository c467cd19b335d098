"""Reading the course's CSVs: parsing, validation errors, caching, download path."""
import zipfile

import numpy as np
import pytest
import torch

from ex09_keypoints import data as kd
from helpers import serve_dir, synthetic_faces, write_course_csv


@pytest.fixture
def small_csv(tmp_path):
    images, points = synthetic_faces(5, seed=2)
    return write_course_csv(tmp_path / "facial_keypoints" / "training.csv", images, points), images, points


def test_parse_scales_and_orders(small_csv):
    path, images, points = small_csv
    split = kd.load_split(path)
    assert split.images.shape == (5, 1, 96, 96) and split.images.dtype == torch.uint8
    assert split.keypoints.shape == (5, 15, 2)
    assert torch.equal(split.images[:, 0], torch.from_numpy(images))
    expected = (points - 48) / 48  # the course's normalisation, (15, 2) in column order (x, y)
    assert np.allclose(split.keypoints.numpy(), expected, atol=1e-4)
    item = kd.CourseDataset(split)[0]
    assert item["image"].shape == (1, 96, 96) and 0 <= item["image"].min() and item["image"].max() <= 1


def test_index_column_layout_is_accepted(tmp_path):
    images, points = synthetic_faces(3, seed=4)
    path = write_course_csv(tmp_path / "idx.csv", images, points, index_column=True)
    split = kd.load_split(path, use_cache=False)
    assert np.allclose(split.keypoints.numpy(), (points - 48) / 48, atol=1e-4)


def _corrupt(path, row, fn):
    lines = path.read_text().splitlines()
    cells = lines[row].split(",")
    fn(cells)
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mutate, column, words", [
    (lambda c: c.__setitem__(-1, " ".join(c[-1].split()[:-1])), "Image", "9216 pixel values, found 9215"),
    (lambda c: c.__setitem__(-1, c[-1].replace(c[-1].split()[0], "12x", 1)), "Image", "not an integer"),
    (lambda c: c.__setitem__(-1, "300 " + " ".join(c[-1].split()[1:])), "Image", "outside 0..255"),
    (lambda c: c.__setitem__(4, ""), "left_eye_inner_corner_x", "missing keypoint"),
    (lambda c: c.__setitem__(4, "nan"), "left_eye_inner_corner_x", "missing keypoint"),
    (lambda c: c.__setitem__(7, "abc"), "left_eye_outer_corner_y", "not a number"),
    (lambda c: c.__setitem__(20, "101.5"), "nose_tip_x", "outside the 96x96 image"),
    (lambda c: c.__setitem__(21, "-3"), "nose_tip_y", "outside the 96x96 image"),
])
def test_bad_rows_name_file_row_column(small_csv, mutate, column, words):
    path = small_csv[0]
    _corrupt(path, 3, mutate)  # data row 3 (line 4)
    with pytest.raises(kd.KeypointsDataError) as e:
        kd.load_split(path, use_cache=False)
    msg = str(e.value)
    assert str(path) in msg and "row 3" in msg and column in msg and words in msg and "--drop-bad-rows" in msg


def test_wrong_cell_count_and_missing_header(small_csv):
    path = small_csv[0]
    _corrupt(path, 2, lambda c: c.pop(5))
    with pytest.raises(kd.KeypointsDataError, match="row 2.*expected 31 comma-separated cells, found 30"):
        kd.load_split(path, use_cache=False)
    path.write_text("a,b,Image\n1,2,3\n")
    with pytest.raises(kd.KeypointsDataError, match="header lacks column.*left_eye_center_x"):
        kd.load_split(path, use_cache=False)


def test_drop_bad_rows_reports_one_line_and_the_rows_in_a_file(small_csv, tmp_path, capsys):
    path = small_csv[0]
    _corrupt(path, 2, lambda c: c.__setitem__(0, "nan"))
    _corrupt(path, 4, lambda c: c.__setitem__(-1, "1 2 3"))
    split = kd.load_split(path, drop_bad_rows=True, use_cache=False)
    assert len(split) == 3 and split.dropped == 2
    assert capsys.readouterr().err == "", "loading alone prints nothing"
    kd.report_dropped({"train": split}, tmp_path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dropped 2 bad row(s), kept 3" in err and "dropped_rows.txt" in err
    rows = (tmp_path / "dropped_rows.txt").read_text().splitlines()
    assert len(rows) == 2 and "row 2" in rows[0] and "missing keypoint" in rows[0] and "row 4" in rows[1]


def test_cache_hit_and_invalidation(small_csv, monkeypatch):
    path = small_csv[0]
    first = kd.load_split(path)
    calls = []
    real_parse = kd.parse_csv
    monkeypatch.setattr(kd, "parse_csv", lambda *a, **k: calls.append(1) or real_parse(*a, **k))
    again = kd.load_split(path)
    assert calls == [] and torch.equal(first.images, again.images)  # served from the cache
    images, points = synthetic_faces(4, seed=9)
    write_course_csv(path, images, points)  # the CSV changes -> the cache must not be used
    changed = kd.load_split(path)
    assert calls == [1] and len(changed) == 4
    assert kd.cache_dir() in kd._cache_file(path, False).parents  # never beside the data


def test_missing_files_offline_error_names_files_and_folder(tmp_path):
    with pytest.raises(kd.KeypointsDataError) as e:
        kd.ensure_files(tmp_path / "nowhere", url="http://127.0.0.1:9/facial_keypoints.zip")
    msg = str(e.value)
    assert "training.csv" in msg and "val.csv" in msg and str(tmp_path / "nowhere" / "facial_keypoints") in msg


def test_download_from_local_http_server(tmp_path):
    """The download path, against a server on loopback serving an archive laid out like the course's."""
    images, points = synthetic_faces(6, seed=5)
    src = tmp_path / "serve"
    write_course_csv(src / "training.csv", images[:4], points[:4])
    write_course_csv(src / "val.csv", images[4:], points[4:])
    with zipfile.ZipFile(src / "facial_keypoints.zip", "w") as zf:
        zf.write(src / "training.csv", "training.csv")
        zf.write(src / "val.csv", "val.csv")
    with serve_dir(src) as (base, _):
        splits = kd.load_keypoints(tmp_path / "root", url=f"{base}/facial_keypoints.zip")
    assert len(splits["train"]) == 4 and len(splits["val"]) == 2
    assert (tmp_path / "root" / "facial_keypoints" / "val.csv").is_file()


def test_real_files_decode(real_data):
    splits = kd.load_keypoints(real_data)
    assert len(splits["train"]) == 1546 and len(splits["val"]) == 298
    assert splits["train"].keypoints.abs().max() <= 1.0
    # the person's left eye is on the image's right side in (nearly) every face
    k = splits["train"].keypoints
    assert (k[:, 0, 0] > k[:, 1, 0]).float().mean() > 0.98
