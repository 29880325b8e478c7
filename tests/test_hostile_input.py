"""Every reader of user files against generated hostile input (hypothesis): random bytes, wrong encodings, huge
lines, empty files, NaN/inf, mutated and truncated valid files, mismatched shapes.

Each case must end in the reader's own error, one sentence naming the file, or a valid result; never another
exception. CI runs FUZZ_EXAMPLES examples per reader (default 60); the full figure is
``JAXMASK_FUZZ_EXAMPLES=1000 python -m pytest tests/test_hostile_input.py --hypothesis-show-statistics``.
"""

import gzip
import io
import os
import subprocess
import sys
import tempfile

from absl import flags
from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

from jaxmask import checkpoints, data, evaluate, flagfiles, train_lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_EXAMPLES = int(os.environ.get("JAXMASK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize="JAXMASK_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_DIR = tempfile.mkdtemp(prefix="jaxmask_fuzz_")

VALID = {  # a valid file of each text format, the seed of the mutated cases
    "tsv": "prefix\ttarget\tfoil\tcounterfactual\tcondition\nthe athlete\tis\tare\tthe athletes\tsimple_S\n",
    "marvin_linzen": "task\tcondition\tgrammatical\tungrammatical\nsimple_agrmt\tsing\tthe author laughs\t"
                     "the author laugh\n",
    "blimp": '{"one_prefix_prefix": "A niece of", "one_prefix_word_good": "has", "one_prefix_word_bad": "have", '
             '"UID": "x"}\n',
    "vocab": "<unk>\n<eos>\nthe\nathlete\n",
    "flagfile": "# a comment\n--steps=40\n--lambdas=0.1,1.0\n--phenomenon=agreement\n",
}


def _mutate(valid: str):
  """A valid file with random bytes inserted, bytes cut, or truncated."""
  raw = valid.encode()
  return st.one_of(
      st.tuples(st.integers(0, len(raw)), st.binary(min_size=1, max_size=64)).map(
          lambda t: raw[:t[0]] + t[1] + raw[t[0]:]),
      st.tuples(st.integers(0, len(raw)), st.integers(1, 16)).map(lambda t: raw[:t[0]] + raw[t[0] + t[1]:]),
      st.integers(0, len(raw)).map(lambda n: raw[:n]))


def hostile(valid: str):
  """Bytes a user might hand a reader by mistake, or an attacker on purpose."""
  words = st.sampled_from(["the", "is", "are", "nan", "inf", "-inf", "NaN", "1e309", "--steps", "\t", " ", "\n",
                           "\r\n", "\x00", "é", "\ufeff", "\u2028", "{", "}", '"', "[", "0", "-1", "99999999999"])
  return st.one_of(
      st.binary(max_size=512),  # random bytes
      st.just(b""),  # empty file
      st.text(max_size=80).map(lambda t: (valid + t).encode("utf-16")),  # wrong encodings
      st.text(st.characters(min_codepoint=0xa0, max_codepoint=0xff), min_size=1, max_size=40).map(
          lambda t: (valid + t).encode("latin-1")),
      st.integers(100_000, 400_000).map(lambda n: valid.encode() + b"x" * n + b"\t" + b"y" * n + b"\n"),  # huge line
      st.lists(words, max_size=60).map(lambda ws: (valid + "".join(ws)).encode()),  # NaN, inf, odd separators
      _mutate(valid))


def _file(raw: bytes, name: str) -> str:
  path = os.path.join(_DIR, name)
  with open(path, "wb") as f:
    f.write(raw)
  return path


def _one_sentence(message: str, path: str) -> None:
  assert path in message, message
  assert "\n" not in message and message.rstrip().endswith("."), message


@pytest.mark.parametrize("reader, fmt", [(data.read_tsv, "tsv"), (data.load_marvin_linzen, "marvin_linzen"),
                                         (data.load_blimp, "blimp")], ids=["tsv", "marvin_linzen", "blimp"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
@FUZZ
@given(drawn=st.data())
def test_item_readers(reader, fmt, suffix, drawn):
  raw = drawn.draw(hostile(VALID[fmt]))
  path = _file(raw, f"items{suffix}")
  if suffix and len(raw) % 2 == 0:  # a gzip file of the hostile bytes, or (half the time) the raw bytes as .gz
    with gzip.open(path, "wb") as f:
      f.write(raw)
  try:
    pairs = reader(path)
  except data.DataError as e:
    _one_sentence(str(e), path)
    return
  assert all(isinstance(p, data.Pair) for p in pairs)


@FUZZ
@given(raw=hostile(VALID["vocab"]))
def test_vocab_reader(raw):
  path = _file(raw, "vocab.txt")
  try:
    words = checkpoints.read_vocab(path)
  except checkpoints.CheckpointError as e:
    _one_sentence(str(e), path)
    return
  assert words and all(w and len(w.split()) == 1 for w in words)


@FUZZ
@given(raw=hostile('{"vocab_size": 4, "embed_size": 2, "hidden_size": 2, "num_layers": 1}'))
def test_checkpoint_config_reader(raw):
  path = _file(raw, "config.json")
  try:
    config = checkpoints._read_config(path)  # pylint: disable=protected-access
  except checkpoints.CheckpointError as e:
    _one_sentence(str(e), path)
    return
  assert all(isinstance(config[k], int) and config[k] > 0 for k in checkpoints.MODEL_KEYS)


def _flag_values() -> flags.FlagValues:
  fv = flags.FlagValues()
  flags.DEFINE_integer("steps", 300, "", flag_values=fv)
  flags.DEFINE_list("lambdas", ["1.0"], "", flag_values=fv)
  flags.DEFINE_enum("phenomenon", "agreement", ["agreement", "gender"], "", flag_values=fv)
  flags.DEFINE_boolean("only_known", True, "", flag_values=fv)
  return fv


@FUZZ
@given(raw=hostile(VALID["flagfile"]))
def test_main_flagfile_parser(raw):
  path = _file(raw, "job.cfg")
  try:
    flagfiles.parse(["main", f"--flagfile={path}"], _flag_values(), "main")
  except SystemExit as e:
    assert isinstance(e.code, str) and e.code.startswith("main: "), e.code
    _one_sentence(e.code, path)


@FUZZ
@given(raw=hostile("--steps=40\n--hidden_size=32\n"))
def test_train_lm_flagfile_reader(raw):
  path = _file(raw, "lm.cfg")
  try:
    train_lm.read_flagfile(path)
  except train_lm.TrainingError as e:
    _one_sentence(str(e), path)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.lists(st.integers(-10**30, 10**30), max_size=20).map(
    lambda xs: ",".join(map(str, xs))), st.sampled_from(["nan", "inf", "1e3", "3,,4", " 3 , 4 ", "0x10", "٣"])))
def test_units_lists(text):
  try:
    units = evaluate.parse_units(text, 64)
  except ValueError as e:
    assert str(e).startswith("--units must") and "\n" not in str(e)
    return
  assert len(units) and all(0 <= u < 64 for u in units)


torch = None


def _torch():
  global torch  # pylint: disable=global-statement
  torch = pytest.importorskip("torch")
  return torch


def _state_dict(vocab, embed, hidden, layers, fill):
  t = _torch()
  rng = np.random.default_rng(0)
  shapes = {"encoder.weight": (vocab, embed), "decoder.weight": (vocab, hidden), "decoder.bias": (vocab,)}
  for k in range(layers):
    shapes.update({f"rnn.weight_ih_l{k}": (4 * hidden, hidden if k else embed), f"rnn.weight_hh_l{k}": (4 * hidden, hidden),
                   f"rnn.bias_ih_l{k}": (4 * hidden,), f"rnn.bias_hh_l{k}": (4 * hidden,)})
  return {k: t.tensor(rng.normal(size=s).astype(np.float32) if fill is None else np.full(s, fill, np.float32))
          for k, s in shapes.items()}


@st.composite
def torch_files(draw):
  """Bytes of a torch.save file: random, truncated, edited, or a state dict with NaN/inf or mismatched shapes."""
  t = _torch()
  kind = draw(st.sampled_from(["random", "truncated", "edited", "nonfinite", "shapes", "legacy_truncated"]))
  if kind == "random":
    return draw(st.binary(max_size=2048))
  sizes = draw(st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.integers(1, 2)))
  state = _state_dict(*sizes, fill=draw(st.sampled_from([np.nan, np.inf, -np.inf])) if kind == "nonfinite" else None)
  if kind == "shapes":  # one entry replaced by a tensor of another shape
    key = draw(st.sampled_from(sorted(state)))
    state[key] = t.zeros(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
  buffer = io.BytesIO()
  t.save(state, buffer, _use_new_zipfile_serialization=kind != "legacy_truncated")
  raw = buffer.getvalue()
  if kind in ("truncated", "legacy_truncated"):
    return raw[:draw(st.integers(0, len(raw) - 1))]
  if kind == "edited":
    at = draw(st.integers(0, len(raw) - 1))
    return raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at + 16:]
  return raw


@FUZZ
@given(raw=torch_files())
def test_torch_checkpoint_reader(raw):
  from jaxmask import convert
  path = _file(raw, "model.pt")
  try:
    state, _ = convert.load_torch_state(path)
    convert.params_from_state_dict(state)
  except convert.ConvertError as e:
    message = str(e) if path in str(e) else f"{path}: {e}"  # convert() prefixes the path to the layout errors
    _one_sentence(message, path)


@pytest.mark.parametrize("command, name, raw", [
    ("main", "job.cfg", "--steps=40\n--phénomène=x\n".encode("latin-1")),
    ("evaluate", "items.tsv", "prefix\ttarget\tfoil\nthé athlete\tis\tare\n".encode("cp1252")),
], ids=["main_flagfile_latin1", "evaluate_items_cp1252"])
def test_command_line_answers_one_sentence_and_exit_code_1(tmp_path, command, name, raw):
  path = tmp_path / name
  path.write_bytes(raw)
  args = {"main": [f"--flagfile={path}", f"--workdir={tmp_path / 'w'}"], "evaluate": [f"--items={path}"]}[command]
  proc = subprocess.run([sys.executable, "-m", f"jaxmask.{command}", *args], capture_output=True, text=True,
                        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip() == f"{command}: {path}, line 2: byte 0xe9 at column " \
                                f"{5 if command == 'main' else 3} is not UTF-8 text; save the file as UTF-8."


@pytest.mark.parametrize("field", ["learning_rate", "mu", "target_flip", "init_logit"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_settings_are_refused_with_the_flag_named(field, value):
  from jaxmask import experiment
  with pytest.raises(experiment.ExperimentError, match=rf"^--{field}=(nan|inf|-inf) must be a finite number\.$"):
    experiment.Config(workdir=_DIR, **{field: value}).validate()
