from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynod.errors import InvalidArgument
from dynod.model.procfile import (
    MISCASED_WARNINGS,
    ProcessType,
    load_procfile,
    parse_procfile,
)


def test_classic_lines() -> None:
    pf = parse_procfile(
        "web: gunicorn app:app --bind 0.0.0.0:$PORT\n"
        "  worker:   python worker.py  \n"
        "release: ./manage.py migrate\n"
    )
    assert pf.processes == (
        ProcessType("web", "gunicorn app:app --bind 0.0.0.0:$PORT"),
        ProcessType("worker", "python worker.py"),
        ProcessType("release", "./manage.py migrate"),
    )
    assert pf.types == ("release", "web", "worker")
    assert pf.warnings == ()
    assert pf.present


def test_names_allow_digits_underscore_dash_and_case() -> None:
    pf = parse_procfile("Urgent_Worker-2: run.sh\n")
    assert pf.as_dict() == {"Urgent_Worker-2": "run.sh"}


def test_comments_and_blank_lines_are_silent() -> None:
    pf = parse_procfile("# a comment\n\n   \nweb: x\n   # indented comment\n")
    assert pf.as_dict() == {"web": "x"}
    assert pf.warnings == ()


def test_unmatched_line_warns_and_is_ignored() -> None:
    pf = parse_procfile("web: ok\nweb.1: nope\nsingleword\n")
    assert pf.as_dict() == {"web": "ok"}
    assert len(pf.warnings) == 2
    assert "line 2" in pf.warnings[0]
    assert "line 3" in pf.warnings[1]


def test_colon_is_optional_in_the_classic_regex_but_warned() -> None:
    pf = parse_procfile("web gunicorn app\n")
    assert pf.as_dict() == {"web": "gunicorn app"}
    assert "no colon" in pf.warnings[0]


def test_duplicate_type_last_wins_with_warning() -> None:
    pf = parse_procfile("web: one\nworker: w\nweb: two\n")
    assert pf.as_dict() == {"worker": "w", "web": "two"}
    assert pf.command("web") == "two"
    assert len(pf.warnings) == 1
    assert 'type "web" is declared again' in pf.warnings[0]


def test_empty_command_is_ignored_with_warning() -> None:
    pf = parse_procfile("web: \nworker: w\n")
    assert pf.as_dict() == {"worker": "w"}
    assert "no command" in pf.warnings[0]


def test_command_keeps_inner_colons_and_shell_syntax() -> None:
    pf = parse_procfile("web: bash -c 'echo a:b' && exec x ${PORT:-5000}\r\n")
    assert pf.command("web") == "bash -c 'echo a:b' && exec x ${PORT:-5000}"


def test_load_missing(tmp_path: Path) -> None:
    pf = load_procfile(tmp_path)
    assert not pf.present
    assert pf.processes == ()
    assert pf.warnings == ()


def test_load_miscased_is_ignored_with_herokus_warning(tmp_path: Path) -> None:
    (tmp_path / "procfile").write_text("web: x\n")
    pf = load_procfile(tmp_path)
    assert not pf.present
    assert pf.processes == ()
    assert pf.warnings == MISCASED_WARNINGS


def test_load_real(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("web: x\n")
    assert load_procfile(tmp_path).as_dict() == {"web": "x"}


def test_load_refuses_symlink(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("web: leaked\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").symlink_to(secret)
    with pytest.raises(InvalidArgument, match="symbolic link"):
        load_procfile(app)


def test_load_refuses_fifo_and_huge(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "Procfile")
    with pytest.raises(InvalidArgument, match="regular file"):
        load_procfile(tmp_path)
    (tmp_path / "Procfile").unlink()
    (tmp_path / "Procfile").write_text("web: x\n" * 100_000)
    with pytest.raises(InvalidArgument, match="larger"):
        load_procfile(tmp_path)
