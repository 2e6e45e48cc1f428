import numpy as np
import pytest

from clpau.core.labels import LabelError, read_disfa_subject, read_occurrence_csv


def test_reads_bp4d_layout_with_unknowns(tmp_path):
    f = tmp_path / "F001_T1.csv"
    f.write_text("frame,1,2,4,12\n10,0,1,9,1\n11,1,1,0,0\n")
    frames, labels = read_occurrence_csv(f, [1, 2, 4, 12, 23])
    assert frames.tolist() == [10, 11]
    np.testing.assert_array_equal(labels, [[0, 1, 9, 1, 9], [1, 1, 0, 0, 9]])  # AU23 absent -> unknown


@pytest.mark.parametrize("body,where", [("10,0,1\n", "F.csv:2: 3 fields"), ("10,0,x,1\n", "F.csv:2: not a number"),
                                        ("10,0,1,1\n11,0,5,1\n", "F.csv:3: AU occurrence must be 0, 1 or 9")])
def test_malformed_rows_name_file_and_line(tmp_path, body, where):
    f = tmp_path / "F.csv"
    f.write_text("frame,1,2,4\n" + body)
    with pytest.raises(LabelError, match=where):
        read_occurrence_csv(f, [1, 2, 4])


def test_gft_style_header_with_au_names(tmp_path):
    f = tmp_path / "001_1.csv"
    f.write_text("Frame,AU01,AU2,AU012\n1,1,0,9\n2,0,0,1\n")
    frames, labels = read_occurrence_csv(f, [1, 2, 12, 24])
    assert frames.tolist() == [1, 2]
    np.testing.assert_array_equal(labels, [[1, 0, 9, 9], [0, 0, 1, 9]])


def test_disfa_intensities_become_occurrence_with_unknowns(tmp_path):
    (tmp_path / "SN001_au1.txt").write_text("1,0\n2,1\n3,2\n4,5\n5,9\n")
    (tmp_path / "SN001_au12.txt").write_text("1,3\n2,0\n3,0\n")
    frames, labels = read_disfa_subject(tmp_path, "SN001", [1, 12, 25])
    assert frames.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(labels, [[0, 1, 9], [0, 0, 9], [1, 0, 9], [1, 9, 9], [9, 9, 9]])
    assert read_disfa_subject(tmp_path, "SN001", [1], threshold=1)[1][:, 0].tolist() == [0, 1, 1, 1, 9]


@pytest.mark.parametrize("line,where", [("3\n", "SN001_au1.txt:2: expected 'frame,intensity'"),
                                        ("3,x\n", "SN001_au1.txt:2: not a number"),
                                        ("3,7\n", "SN001_au1.txt:2: DISFA intensity must be 0-5")])
def test_disfa_malformed_rows_name_file_and_line(tmp_path, line, where):
    (tmp_path / "SN001_au1.txt").write_text("1,0\n" + line)
    with pytest.raises(LabelError, match=where):
        read_disfa_subject(tmp_path, "SN001", [1])


def test_committed_fold_files_are_the_published_splits():
    from clpau.core.benchmarks import read_folds

    bp4d, disfa = read_folds("data/folds/bp4d.yaml"), read_folds("data/folds/disfa.yaml")
    assert [len(f) for f in bp4d] == [14, 14, 13] and sum(map(len, disfa)) == 27
    assert bp4d[0][0] == "F001" and disfa[2][-1] == "SN004"
