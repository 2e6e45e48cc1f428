import numpy as np
import pytest

from clpau.labels import LabelError, read_occurrence_csv


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
