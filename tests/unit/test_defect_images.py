"""Image listing (folder, CSV, NEU-DET layouts), VOC boxes and decoding, on tiny files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abyssal.core.errors import DataError
from abyssal.data.images import image_size, load_image
from abyssal.solutions.defect.images import (
    Box,
    ImageRecord,
    list_images,
    list_unlabelled,
    load_images,
    read_voc_boxes,
    scaled_boxes,
)
from tests.conftest import dataset

RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (12, 16), dtype=np.uint8)  # (H, W)
COLOUR = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # (H, W, 3)


def png(path: Path, pixels: np.ndarray = GREY, mode: str | None = None) -> Path:
    """Write ``pixels`` as an image file (format from the extension); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(path)
    return path


def voc(path: Path, *boxes: tuple[str, int, int, int, int]) -> Path:
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in boxes
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>x</filename>{objects}</annotation>")
    return path


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


# --- folder layout -----------------------------------------------------------------------------


def test_folder_layout_reads_classes_nested_images_boxes_and_skips(tmp_path: Path) -> None:
    png(tmp_path / "crack" / "c1.png")
    png(tmp_path / "crack" / "deeper" / "c2.jpg")
    png(tmp_path / "spot" / "s1.PNG")
    voc(tmp_path / "spot" / "s1.xml", ("spot", 1, 2, 5, 6), ("spot", 7, 1, 9, 4))
    (tmp_path / "spot" / "notes.txt").write_text("hi")
    (tmp_path / "spot" / ".DS_Store").write_text("x")
    png(tmp_path / ".cache" / "hidden.png")
    listing = list_images(tmp_path)
    assert listing.layout == "folder" and listing.classes == ["crack", "spot"]
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in listing.records] == [
        ("crack/c1.png", "crack"),
        ("crack/deeper/c2.jpg", "crack"),
        ("spot/s1.PNG", "spot"),
    ]
    assert listing.records[0].boxes == ()
    assert listing.records[2].boxes == (Box(1, 2, 5, 6, "spot"), Box(7, 1, 9, 4, "spot"))
    assert len(listing.skipped) == 1
    assert listing.skipped[0][0].name == "notes.txt" and "not an image" in listing.skipped[0][1]


def test_folder_layout_refuses_images_outside_class_folders(tmp_path: Path) -> None:
    png(tmp_path / "a" / "x.png")
    png(tmp_path / "loose.png")
    with pytest.raises(DataError, match=r"directly in the folder \(loose\.png\)"):
        list_images(tmp_path, "folder")


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    png(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("nothing")
    with pytest.raises(DataError, match="class folder 'b' holds no images") as e:
        list_images(tmp_path)
    assert e.value.path == str(tmp_path / "b")


def test_missing_or_imageless_folder_describes_the_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder; expected one of three layouts"):
        list_images(tmp_path / "nope")
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataError, match=r"no images found .*CSV file.*NEU-DET"):
        list_images(tmp_path)


# --- CSV layout --------------------------------------------------------------------------------


def test_csv_layout_with_boxes_relative_paths_and_repeated_images(tmp_path: Path) -> None:
    png(tmp_path / "data" / "imgs" / "a.png")
    png(tmp_path / "data" / "imgs" / "b.png")
    csv_path = tmp_path / "data" / "labels.csv"
    csv_path.write_text(
        "path,label,note,xmin,ymin,xmax,ymax\n"
        "imgs/a.png,scratch,x,1,2,3,4\n"
        "imgs/b.png,spot,y,,,,\n"
        "imgs/a.png,scratch,z,5,6,7,8.5\n"
    )
    listing = list_images(csv_path)
    assert listing.layout == "csv" and listing.classes == ["scratch", "spot"]
    a, b = listing.records
    assert a.path == tmp_path / "data" / "imgs" / "a.png" and a.label == "scratch"
    assert a.boxes == (Box(1, 2, 3, 4, "scratch"), Box(5, 6, 7, 8.5, "scratch"))
    assert b.label == "spot" and b.boxes == ()


def test_csv_without_box_columns_reads_the_xml_beside_the_image(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    voc(tmp_path / "a.xml", ("dent", 0, 0, 4, 4))
    (tmp_path / "l.csv").write_text(f"path,label\n{tmp_path / 'a.png'},dent\n")
    (record,) = list_images(tmp_path / "l.csv", "csv").records
    assert record.boxes == (Box(0, 0, 4, 4, "dent"),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("path,class\na.png,x\n", r"l\.csv, column 'label': missing column 'label'"),
        ("path,label\na.png,x\nmissing.png,y\n", r"l\.csv, row 2, column 'path': no such image"),
        ("path,label\na.png, \n", r"l\.csv, row 1, column 'label': empty label"),
        ("path,label\na.png,x\na.png,y\n", r"row 2, column 'label'.*'x' on row 1"),
        ("path,label,xmin,ymin,xmax\na.png,x,1,1,2\n", r"missing column 'ymax'"),
        ("path,label,xmin,ymin,xmax,ymax\na.png,x,1,one,2,2\n", r"row 1, column 'ymin'"),
        ("path,label\n", "header but no rows"),
    ],
)
def test_csv_errors_name_the_row_and_column(tmp_path: Path, text: str, match: str) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        list_images(tmp_path / "l.csv")


# --- NEU-DET layout and auto-detection ---------------------------------------------------------


def neu_det_tree(root: Path) -> Path:
    png(root / "IMAGES" / "rolled-in_scale_1.jpg")
    png(root / "IMAGES" / "crazing_2.jpg")  # no annotation: no boxes
    (root / "IMAGES" / "Thumbs.db").write_text("x")
    voc(root / "ANNOTATIONS" / "rolled-in_scale_1.xml", ("rolled-in_scale", 3, 3, 9, 9))
    png(root / "Validation_Images" / "crazing_3.jpg")
    voc(root / "Validation_Annotations" / "crazing_3.xml", ("crazing", 0, 1, 2, 3))
    return root


def test_neu_det_layout_merges_both_folders(tmp_path: Path) -> None:
    listing = list_images(neu_det_tree(tmp_path))  # auto: IMAGES/ means NEU-DET
    assert listing.layout == "neu_det" and listing.classes == ["crazing", "rolled-in_scale"]
    by_name = {r.path.name: r for r in listing.records}
    assert sorted(by_name) == ["crazing_2.jpg", "crazing_3.jpg", "rolled-in_scale_1.jpg"]
    assert by_name["rolled-in_scale_1.jpg"].label == "rolled-in_scale"
    assert by_name["rolled-in_scale_1.jpg"].boxes == (Box(3, 3, 9, 9, "rolled-in_scale"),)
    assert by_name["crazing_2.jpg"].boxes == ()
    assert by_name["crazing_3.jpg"].boxes == (Box(0, 1, 2, 3, "crazing"),)
    assert [p.name for p, _ in listing.skipped] == ["Thumbs.db"]


def test_neu_det_name_without_number_is_an_error(tmp_path: Path) -> None:
    png(tmp_path / "IMAGES" / "crazing.jpg")
    with pytest.raises(DataError, match=r"crazing\.jpg: the name is not <class>_<number>"):
        list_images(tmp_path, "neu_det")


def test_auto_detection_and_layout_mismatch(tmp_path: Path) -> None:
    png(tmp_path / "f" / "a" / "x.png")
    (tmp_path / "l.csv").write_text(f"path,label\n{tmp_path / 'f' / 'a' / 'x.png'},a\n")
    assert list_images(tmp_path / "f").layout == "folder"
    assert list_images(tmp_path / "l.csv").layout == "csv"
    assert list_images(neu_det_tree(tmp_path / "n")).layout == "neu_det"
    with pytest.raises(DataError, match="the csv layout needs a CSV file"):
        list_images(tmp_path / "f", "csv")
    with pytest.raises(ValueError, match="unknown layout 'coco'"):
        list_images(tmp_path / "f", "coco")  # type: ignore[arg-type]


def test_list_unlabelled_is_recursive_sorted_and_unlabelled(tmp_path: Path) -> None:
    png(tmp_path / "b.png")
    png(tmp_path / "a" / "z.jpg")
    (tmp_path / "a" / "x.csv").write_text("x")
    listing = list_unlabelled(tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in listing.records] == [
        "a/z.jpg",
        "b.png",
    ]
    assert all(r.label is None for r in listing.records) and len(listing.skipped) == 1
    assert list_unlabelled(tmp_path / "b.png").records == [ImageRecord(tmp_path / "b.png", None)]
    with pytest.raises(DataError, match="not an image file"):
        list_unlabelled(tmp_path / "a" / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_unlabelled(tmp_path / "empty")


def test_malformed_voc_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"bad\.xml: not valid XML"):
        read_voc_boxes(tmp_path / "bad.xml")
    (tmp_path / "nobox.xml").write_text("<annotation><object><name>s</name></object></annotation>")
    with pytest.raises(DataError, match=r"object 1 \(s\): expected a number in bndbox/xmin"):
        read_voc_boxes(tmp_path / "nobox.xml")


# --- decoding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "channels"),
    [("L", 1), ("RGB", 3), ("RGBA", 3), ("LA", 1), ("1", 1), ("CMYK", 3), ("YCbCr", 3)],
)
def test_load_image_modes(tmp_path: Path, mode: str, channels: int) -> None:
    source = COLOUR if channels == 3 else GREY
    suffix = {"CMYK": ".jpg", "YCbCr": ".tif"}.get(mode, ".png")
    path = png(tmp_path / f"x{suffix}", source, mode)
    pixels = load_image(path)
    assert pixels.shape == (channels, 12, 16) and pixels.dtype == np.uint8
    if mode in ("L", "RGB", "RGBA"):
        expected = GREY[None] if channels == 1 else COLOUR.transpose(2, 0, 1)
        assert np.array_equal(pixels, expected)


def test_palette_images_become_colour_or_grey(tmp_path: Path) -> None:
    colour = png(tmp_path / "c.png", COLOUR, "P")
    grey = tmp_path / "g.png"
    Image.fromarray(GREY).convert("P").save(grey)  # a palette of greys
    assert load_image(colour).shape == (3, 12, 16)
    assert load_image(grey).shape == (1, 12, 16)


def test_sixteen_bit_grey_is_stretched_by_its_range(tmp_path: Path) -> None:
    values = np.array([[1000, 2000], [3000, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    assert load_image(path).tolist() == [[[0, 128], [255, 0]]]


def test_grey_stored_as_rgb_counts_as_grey(tmp_path: Path) -> None:
    path = png(tmp_path / "g.png", np.repeat(GREY[..., None], 3, axis=2))
    assert np.array_equal(load_image(path), GREY[None])


def test_channels_one_converts_colour_with_luma(tmp_path: Path) -> None:
    path = png(tmp_path / "c.png", COLOUR)
    expected = np.asarray(Image.fromarray(COLOUR).convert("L"))
    assert np.array_equal(load_image(path, channels=1), expected[None])


def test_channels_three_refuses_a_grey_image_naming_it(tmp_path: Path) -> None:
    path = png(tmp_path / "g.png")
    with pytest.raises(DataError, match=r"g\.png: this is a grey image; the model expects colour"):
        load_image(path, channels=3)


def test_resize_gives_the_square_size(tmp_path: Path) -> None:
    assert load_image(png(tmp_path / "c.png", COLOUR), size=8).shape == (3, 8, 8)
    assert load_image(png(tmp_path / "g.png"), size=24).shape == (1, 24, 24)


def test_unreadable_files_name_the_file_and_reason(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    png_bytes, jpg_bytes = encoded(GREY, "PNG"), encoded(COLOUR, "JPEG")
    (tmp_path / "cut.png").write_bytes(png_bytes[: len(png_bytes) // 2])
    (tmp_path / "cut.jpg").write_bytes(jpg_bytes[: len(jpg_bytes) // 2])
    cases = {
        "text.png": "not an image Pillow can read",
        "empty.jpg": r"the file is empty \(0 bytes\)",
        "cut.png": "truncated",
        "cut.jpg": "truncated",
        "missing.png": "no such image file",
    }
    for name, reason in cases.items():
        with pytest.raises(DataError, match=reason) as e:
            load_image(tmp_path / name)
        assert e.value.path == str(tmp_path / name)


def test_load_images_reports_every_bad_file_then_skips_them(tmp_path: Path) -> None:
    good = [png(tmp_path / f"g{i}.png") for i in range(2)]
    (tmp_path / "bad1.png").write_text("x")
    (tmp_path / "bad2.jpg").write_bytes(encoded(COLOUR, "JPEG")[:100])
    paths = [good[0], tmp_path / "bad1.png", good[1], tmp_path / "bad2.jpg"]
    records = [ImageRecord(p, "a") for p in paths]
    with pytest.raises(DataError, match=r"2 of 4 images cannot be used") as e:
        load_images(records, size=8, channels=None)
    assert "bad1.png" in str(e.value) and "bad2.jpg" in str(e.value)
    assert "data.skip_bad_images=true" in str(e.value)
    pixels, kept, bad = load_images(records, size=8, channels=None, skip_bad=True)
    assert pixels.shape == (2, 1, 8, 8) and kept == [0, 2]
    assert [p.name for p, _ in bad] == ["bad1.png", "bad2.jpg"]


def test_load_images_lists_at_most_ten_bad_files(tmp_path: Path) -> None:
    records = [ImageRecord(tmp_path / f"m{i}.png", "a") for i in range(12)]
    with pytest.raises(DataError, match=r"(?s)12 of 12 images.*and 2 more") as e:
        load_images(records, size=8, channels=1)
    assert "m9.png" in str(e.value) and "m10.png" not in str(e.value)


def test_load_images_makes_grey_colour_only_in_a_colour_set(tmp_path: Path) -> None:
    grey, colour = png(tmp_path / "g.png"), png(tmp_path / "c.png", COLOUR)
    mixed = [ImageRecord(grey, "a"), ImageRecord(colour, "b")]
    pixels, _, _ = load_images(mixed, size=8, channels=None)
    assert pixels.shape == (2, 3, 8, 8)
    assert np.array_equal(pixels[0, 0], pixels[0, 2])  # grey repeated into 3 channels
    assert load_images(mixed[:1], size=8, channels=None)[0].shape == (1, 1, 8, 8)
    assert load_images(mixed, size=8, channels=1)[0].shape == (2, 1, 8, 8)
    assert load_images(mixed, size=8, channels=3)[0].shape == (2, 3, 8, 8)
    threaded = load_images(mixed * 3, size=8, channels=None, workers=2)[0]
    assert np.array_equal(threaded, np.concatenate([pixels] * 3))


def test_scaled_boxes_and_image_size(tmp_path: Path) -> None:
    path = png(tmp_path / "a.png", np.zeros((10, 20), dtype=np.uint8))  # width 20, height 10
    assert image_size(path) == (20, 10)
    record = ImageRecord(path, "a", (Box(2, 4, 10, 8, "a"),))
    assert scaled_boxes(record, 10) == (Box(1.0, 4.0, 5.0, 8.0, "a"),)
    assert scaled_boxes(ImageRecord(tmp_path / "absent.png", "a"), 10) == ()


@pytest.mark.data
def test_real_neu_det_listing() -> None:
    listing = list_images(dataset("neu_det"), "neu_det")
    assert len(listing.records) == 1_800
    labels = [r.label for r in listing.records]
    assert {c: labels.count(c) for c in listing.classes} == {
        c: 300
        for c in (
            "crazing",
            "inclusion",
            "patches",
            "pitted_surface",
            "rolled-in_scale",
            "scratches",
        )
    }
    assert all(r.boxes for r in listing.records)
