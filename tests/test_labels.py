"""Ratings read from the data sets' own layouts and from any CSV/Parquet labels file."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiny_sets

from dgiqa_cli.evaluation.labels import LabelsError, detect_dataset, load_labels


def test_koniq_reads_mos_and_the_official_split(tmp_path):
    root = tiny_sets.koniq(tmp_path / "koniq10k")
    labelled = load_labels(dataset=root)
    assert labelled.name == "koniq10k" and len(labelled) == 6
    assert labelled.images[0].path == str(root / "1024x768" / "1000.jpg")
    assert labelled.images[0].mos == tiny_sets.mos_of(0)
    assert [i.split for i in labelled.images] == ["train", "test", "train", "validation", "test", "test"]
    assert labelled.default_split() == "test"
    test = labelled.select("test")
    assert [i.name for i in test.images] == ["1001.jpg", "1004.jpg", "1005.jpg"] and test.split == "test"
    assert len(labelled.select("val")) == 1  # pyiqa's name for it works too
    zscore = load_labels(dataset=root, mos_column="MOS_zscore")
    assert zscore.images[0].mos == pytest.approx(25 * (tiny_sets.mos_of(0) - 1))


def test_koniq_without_its_split_file_says_so_and_has_no_test_split(tmp_path):
    root = tiny_sets.koniq(tmp_path / "koniq10k", with_sets=False)
    labelled = load_labels(dataset=root)
    assert labelled.default_split() == "all"
    assert any("no official split" in note for note in labelled.notes)
    with pytest.raises(LabelsError, match="no images in split 'test'"):
        labelled.select("test")


def test_kadid_groups_by_reference_and_finds_the_folder_one_level_down(tmp_path):
    tiny_sets.kadid(tmp_path / "download" / "kadid10k")
    labelled = load_labels(dataset=tmp_path / "download")  # the archive's own folder inside ours
    assert labelled.name == "kadid10k" and len(labelled) == 6
    assert {i.group for i in labelled.images} == {"I01.png", "I02.png"}
    assert labelled.default_split() == "all" and not labelled.lower_is_better  # KADID's dmos grows with quality


def test_livec_leaves_out_the_seven_training_pictures(tmp_path):
    root = tiny_sets.livec(tmp_path / "ChallengeDB_release")
    assert detect_dataset(root) == "livec"
    labelled = load_labels(dataset=root)
    assert [i.name for i in labelled.images] == ["10.bmp", "11.bmp", "12.bmp", "13.bmp"]
    assert [i.mos for i in labelled.images] == pytest.approx([20 * tiny_sets.mos_of(lv) for lv in range(4)])
    assert all(i.path.startswith(str(root / "Images")) for i in labelled.images)


def test_spaq_reads_the_spreadsheet_and_records_the_resize(tmp_path):
    root = tiny_sets.spaq(tmp_path / "SPAQ")
    labelled = load_labels(dataset=root)
    assert labelled.name == "spaq" and len(labelled) == 3 and labelled.short_side == 512
    assert labelled.images[2].mos == pytest.approx(20 * tiny_sets.mos_of(2))
    assert load_labels(dataset=root, spaq_resize=False).short_side is None


def test_a_labels_csv_with_split_group_and_other_column_names(tmp_path):
    path = tmp_path / "ratings.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["File", "DMOS", "Part", "Ref"])
        w.writerows([["a.png", "3.5", "train", "r1"], ["sub/b.png", "1.0", "Test", "r2"], ["/abs/c.png", "2", "", ""]])
    labelled = load_labels(
        path,
        path_column="file",
        mos_column="DMOS",
        split_column="part",
        group_column="ref",
        lower_is_better=True,
        root=tmp_path / "pics",
    )
    assert [i.path for i in labelled.images] == [
        str(tmp_path / "pics" / "a.png"),
        str(tmp_path / "pics" / "sub" / "b.png"),
        "/abs/c.png",
    ]
    assert [i.split for i in labelled.images] == ["train", "test", None]
    assert [i.group for i in labelled.images] == ["r1", "r2", None]
    assert labelled.lower_is_better and labelled.name == "ratings"


def test_parquet_labels(tmp_path):
    path = tmp_path / "ratings.parquet"
    pq.write_table(pa.table({"path": ["x.png", "y.png"], "mos": [1.5, 4.0], "split": ["test", "test"]}), path)
    labelled = load_labels(path)
    assert [(i.name, i.mos, i.split) for i in labelled.images] == [("x.png", 1.5, "test"), ("y.png", 4.0, "test")]
    assert labelled.images[0].path == str(tmp_path / "x.png")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,score\na.png,1\n", "no mos column; it has path, score"),
        ("path,mos\na.png,good\n", "row 2: mos 'good' is not a number"),
        ("path,mos\n,3\n", "row 2: empty path"),
        ("path,mos\n", "no rows"),
    ],
)
def test_bad_labels_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(LabelsError, match=message):
        load_labels(path)


def test_an_unknown_folder_names_the_layouts_it_looked_for(tmp_path):
    with pytest.raises(LabelsError, match="not a known data-set layout.*koniq10k_scores_and_distributions.csv"):
        load_labels(dataset=tmp_path)
