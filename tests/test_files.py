"""jaxmask.files: decoding errors name file, line and column; a failed atomic write leaves the old file whole."""

import os

import pytest

from jaxmask import files


def test_a_byte_that_is_not_utf8_is_named_by_line_and_column(tmp_path):
  path = tmp_path / "a.txt"
  path.write_bytes("first\nsecond caf\xe9\n".encode("latin-1"))
  with pytest.raises(ValueError) as error:
    files.read_text(str(path), ValueError)
  assert str(error.value) == f"{path}, line 2: byte 0xe9 at column 11 is not UTF-8 text; save the file as UTF-8."


@pytest.mark.parametrize("raw, message", [(b"\x1f\x8b\x08garbage", "is not a complete gzip file"),
                                          (None, "is a directory")])
def test_damaged_gzip_and_directory_are_one_sentence(tmp_path, raw, message):
  path = tmp_path / "items.tsv.gz"
  path.write_bytes(raw) if raw else path.mkdir()
  with pytest.raises(ValueError, match=message):
    files.read_text(str(path), ValueError)


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
  path = str(tmp_path / "results.json")
  files.write_json(path, {"old": 1})

  def fail(f):
    f.write("{\"new\": ")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    files.write_atomic(path, fail)
  assert open(path).read() == '{\n  "old": 1\n}\n'
  assert os.listdir(tmp_path) == ["results.json"]
