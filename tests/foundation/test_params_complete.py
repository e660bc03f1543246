"""An empty or truncated params file is an error like any other bad params
file: exit code 2 and one line naming the file and the missing sections,
from `nasflow check`, `nasflow stage` and the pipeline's `--set` writer."""
from __future__ import annotations

import pytest
import yaml

from flows.cli import main
from flows.pipeline import write_overrides
from nas_core.config import Params, ParamsError, load_params
from tests.conftest import REPO

SECTIONS = list(Params.model_fields)
TEXT = (REPO / "params.yaml").read_text()


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("text", ["", "\n\n", "# all settings were here\n"], ids=["empty", "blank", "comment"])
@pytest.mark.parametrize("command", ["check", "stage"])
def test_empty_params_file_exits_2_naming_file_and_every_section(tmp_path, capsys, text, command):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    argv = [command, "subset"] if command == "stage" else [command]
    assert main([*argv, "--params", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "empty params file" in line
    assert "missing sections " + ", ".join(SECTIONS) in line


def top_level_starts() -> list[int]:
    """Character offsets where each top-level section of params.yaml starts."""
    starts, offset = [], 0
    for line in TEXT.splitlines(keepends=True):
        if line[:1].isalpha():
            starts.append(offset)
        offset += len(line)
    return starts


@pytest.mark.parametrize("cut", range(1, len(SECTIONS)))
def test_file_cut_before_a_section_names_the_missing_ones(tmp_path, capsys, cut):
    path = tmp_path / "params.yaml"
    path.write_text(TEXT[:top_level_starts()[cut]])
    assert main(["check", "--params", str(path)]) == 2
    line = one_error_line(capsys)
    present = list(yaml.safe_load(path.read_text()))
    missing = [s for s in SECTIONS if s not in present]
    assert str(path) in line and "truncated or incomplete params file" in line
    assert line.split("missing sections ")[1].startswith(", ".join(missing) + " (")


def test_file_cut_mid_line_is_rejected(tmp_path):
    """A cut anywhere before the last section, even inside a line, fails."""
    last = top_level_starts()[-1]
    for n, end in enumerate(range(7, last, max(1, last // 40))):
        path = tmp_path / f"cut{n}.yaml"
        path.write_text(TEXT[:end])
        with pytest.raises(ParamsError, match=str(path)):
            load_params(path)


def test_pipeline_override_writer_refuses_an_empty_file_and_leaves_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    with pytest.raises(ParamsError, match="empty params file"):
        write_overrides(path, {"subset.fraction": 0.4})
    assert path.read_text() == ""


def test_committed_params_file_is_complete():
    assert load_params(REPO / "params.yaml").search.strategy
    assert set(yaml.safe_load(TEXT)) == set(SECTIONS)
