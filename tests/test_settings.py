"""Settings: one declaration, checked when a command starts, flags over the environment, shown by doctor."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from pydantic import ValidationError

from taco_app import cli, settings
from taco_app.settings import Settings, SettingsError, current, use

from .conftest import ROOT

BAD_VALUES = [  # (variable, value, words of what is allowed)
    ("TACO_TOOL_TIMEOUT", "abc", "a positive number of seconds"),
    ("TACO_MAX_IMAGE_PIXELS", "lots", "a whole number of pixels"),
    ("TACO_MAX_IMAGE_PIXELS", "0", "a whole number of pixels"),
    ("TACO_BOX_THRESHOLD", "1.5", "a number between 0 and 1"),
    ("TACO_PREFIX_CACHE", "maybe", "on or off"),
    ("TACO_DB_TIMEOUT", "-1", "a positive number of seconds"),
    ("TACO_TAG_THRESHOLD", "high", "a number between 0 and 1"),
    ("TACO_KB_TIMEOUT", "600", "at most 60"),
    ("TACO_DEVICE", "gpu", "cpu, cuda or cuda:N"),
    ("TACO_QUANTISATION", "2bit", "4bit, 8bit or none"),
    ("TACO_OPENAI_EXTRA_BODY", "[1]", "a JSON object"),
    ("TACO_WIKIPEDIA_URL", "en.wikipedia.org", "an http(s) URL"),
]


@pytest.fixture
def replay_run(tmp_path) -> list[str]:
    """`run` arguments for a session that would finish at once, if it were allowed to start."""
    image, script = tmp_path / "white.png", tmp_path / "s.json"
    Image.new("RGB", (8, 8), "white").save(image)
    script.write_text(json.dumps(['{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"w"}}]}']))
    return ["run", "--image", str(image), "--question", "q", "--backend", f"replay:{script}", "--json"]


@pytest.fixture
def no_work(monkeypatch) -> None:
    """Fail the test if a command gets as far as opening the store or starting a session."""
    import taco_app.runner
    import taco_app.store.db

    def refuse(*args, **kwargs):
        raise AssertionError("work started despite a bad setting")

    monkeypatch.setattr(taco_app.runner, "run", refuse)
    monkeypatch.setattr(taco_app.store.db.Store, "open", classmethod(refuse))


@pytest.mark.parametrize("name,value,allowed", BAD_VALUES)
def test_a_bad_value_stops_a_command_before_any_work(name, value, allowed, replay_run, taco_home, monkeypatch,
                                                     capsys, no_work):
    monkeypatch.setenv(name, value)
    for command in (replay_run, ["doctor"], ["export", "--format", "cota-mantis", "--out", str(taco_home / "x")]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {name} must be ") and allowed in err, err
        assert repr(value) in err and "validation error" not in err and "pydantic" not in err
    assert not taco_home.exists()  # no store, no images, no session


def test_taco_home_that_is_a_file_is_refused(tmp_path, replay_run, monkeypatch, capsys, no_work):
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    for home in (afile, afile / "below"):
        monkeypatch.setenv("TACO_HOME", str(home))
        assert cli.main(replay_run) == 2
        err = capsys.readouterr().err
        assert err == ("error: TACO_HOME must be a folder, not a file (or a path where one can be made),"
                       f" got {str(home)!r}: fix or unset it\n")
    assert afile.read_text() == "not a folder"


def test_a_bad_flag_is_named_as_the_flag(replay_run, capsys, no_work):
    assert cli.main([*replay_run, "--device", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --device must be cpu, cuda or cuda:N, got 'gpu'\n"
    assert cli.main([*replay_run, "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens must be a whole number of tokens, at least 1, got 0" in capsys.readouterr().err


def test_secrets_are_never_repeated_in_the_error(monkeypatch, capsys, no_work):
    monkeypatch.setenv("TACO_AUTH", "only-a-password")
    assert cli.main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err == "error: TACO_AUTH must be user:password, got (hidden): fix or unset it\n"
    monkeypatch.delenv("TACO_AUTH")
    monkeypatch.setenv("OPENAI_API_KEY", "sk secret with spaces")
    assert cli.main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY must be printable ASCII without spaces" in err and "secret" not in err


def test_the_command_line_process_exits_2_with_one_line_and_stores_nothing(tmp_path, replay_run):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "TACO_DB_URL"}  # SQLite in TACO_HOME
    done = subprocess.run([sys.executable, "app.py", *replay_run], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**env, "TACO_HOME": str(home), "TACO_TOOL_TIMEOUT": "abc"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("error: TACO_TOOL_TIMEOUT must be a positive number of seconds (at most 86400),"
                           " got 'abc': fix or unset it\n")
    assert not home.exists()


def test_the_web_app_refuses_to_start_with_the_same_line(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "TACO_DB_URL"}
    for args in ([], ["ui", "--port", "1"]):
        done = subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**env, "TACO_HOME": str(home), "TACO_BOX_THRESHOLD": "2"})
        assert done.returncode == 2, done.stderr
        assert done.stderr == "error: TACO_BOX_THRESHOLD must be a number between 0 and 1, got '2': fix or unset it\n"
    assert not home.exists()


def taco_variables() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("TACO_")}


def test_flags_override_the_environment_without_changing_it(tmp_path, taco_home, replay_run, monkeypatch, capsys):
    monkeypatch.setenv("TACO_TOOL_TIMEOUT", "7")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # restored after the test
    flag_home = tmp_path / "flag-home"
    seen = {}
    real_read = Settings.read

    def read(flags=None):
        seen["settings"] = real_read(flags)
        seen["environment"] = taco_variables()
        return seen["settings"]

    monkeypatch.setattr(Settings, "read", read)
    before = taco_variables()
    assert cli.main(["--home", str(flag_home), "--db", f"sqlite:///{flag_home / 'flag.db'}", *replay_run]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["status"] == "finished"
    assert taco_variables() == before == seen["environment"]
    chosen = seen["settings"]
    assert (chosen.home, chosen.tool_timeout) == (flag_home, 7.0)
    assert chosen.source("home") == "flag (--home)" and chosen.source("db_url") == "flag (--db)"
    assert chosen.source("tool_timeout") == "environment (TACO_TOOL_TIMEOUT)" and chosen.source("model") == "default"
    assert (flag_home / "flag.db").is_file() and not taco_home.exists()  # the session went where the flags said
    assert current().home == taco_home  # the command's settings ended with it


def test_doctor_lists_every_setting_its_value_and_where_it_came_from(tmp_path, taco_home, monkeypatch, capsys):
    monkeypatch.setenv("TACO_TOOL_TIMEOUT", "7.5")
    monkeypatch.setenv("TACO_OPENAI_API_KEY", "sk-very-secret")
    assert cli.main(["--db", "sqlite:///elsewhere.db", "doctor"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("TACO_")}
    assert set(rows) == {settings.variable(name) for name in Settings.model_fields}
    assert rows["TACO_HOME"] == ["TACO_HOME", str(taco_home), "environment", "(TACO_HOME)"]
    assert rows["TACO_DB_URL"] == ["TACO_DB_URL", "sqlite:///elsewhere.db", "flag", "(--db)"]
    assert rows["TACO_TOOL_TIMEOUT"] == ["TACO_TOOL_TIMEOUT", "7.5", "environment", "(TACO_TOOL_TIMEOUT)"]
    assert rows["TACO_BOX_THRESHOLD"] == ["TACO_BOX_THRESHOLD", "0.35", "default"]
    assert rows["TACO_OPENAI_API_KEY"][-2:] == ["environment", "(TACO_OPENAI_API_KEY)"]
    assert "sk-very-secret" not in out
    assert "tool models run on:" in out and "LocalizeObjects" in out  # what it showed before, still there


def test_the_web_apps_doctor_shows_the_same_settings(monkeypatch):
    from taco_app.ui.app import doctor_settings

    monkeypatch.setenv("TACO_AUTH", "ana:secret")
    with use(Settings.read({"device": "cpu"})):
        rows = {row[0]: row[1:] for row in doctor_settings()}
    assert rows["TACO_DEVICE"] == ["cpu", "flag (--device)"]
    assert rows["TACO_AUTH"] == ["******** (set)", "environment (TACO_AUTH)"]
    assert "secret" not in json.dumps(rows)


def test_current_follows_the_environment_until_a_command_installs_its_own(taco_home, monkeypatch):
    assert current().home == taco_home
    monkeypatch.setenv("TACO_MAX_NEW_TOKENS", "64")
    assert current().max_new_tokens == 64
    mine = Settings.read({"max_new_tokens": 8})
    with use(mine):
        monkeypatch.setenv("TACO_MAX_NEW_TOKENS", "128")
        assert current() is mine
    assert current().max_new_tokens == 128
    monkeypatch.setenv("TACO_MAX_NEW_TOKENS", "many")
    with pytest.raises(SettingsError, match="TACO_MAX_NEW_TOKENS must be a whole number of tokens"):
        current()
    with pytest.raises(ValidationError, match="frozen"):
        mine.max_new_tokens = 1  # read once, never changed


def test_openai_api_key_falls_back_to_openai_api_key(monkeypatch):
    monkeypatch.delenv("TACO_OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generic")
    assert current().secret("openai_api_key") == "sk-generic"
    assert current().source("openai_api_key") == "environment (OPENAI_API_KEY)"
    monkeypatch.setenv("TACO_OPENAI_API_KEY", "sk-taco")
    assert current().secret("openai_api_key") == "sk-taco"


def test_every_setting_is_declared_with_a_meaning():
    for name, info in Settings.model_fields.items():
        assert info.description and "\n" not in info.description, name
        assert settings.flag(name) == "" or settings.flag(name).startswith("--")


def test_settings_is_a_base_module():
    tree = ast.parse((ROOT / "taco_app" / "settings.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("taco_app")]


def test_no_other_module_reads_the_environment_for_a_setting():
    """Naming a variable in a message is fine; looking one up (environ.get, getenv, environ[…]) is not."""
    lookups = ("environ.get", "getenv", "environ.pop", "environ.setdefault")
    for path in (ROOT / "taco_app").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(lookups) and node.args:
                assert not ast.unparse(node.args[0]).strip("'\"").startswith("TACO_"), (path, ast.unparse(node))
            if isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                assert not ast.unparse(node.slice).strip("'\"").startswith("TACO_"), (path, ast.unparse(node))


def test_the_readme_table_is_the_declaration():
    readme = (ROOT / "README.md").read_text()
    assert settings.markdown() in readme, "README.md's table is stale: python -m taco_app.settings --markdown"
    done = subprocess.run([sys.executable, "-m", "taco_app.settings", "--markdown"], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60)
    assert done.stdout == settings.markdown()


def test_the_command_line_choices_are_the_constants():
    from taco_app.cota.prompt import FAMILIES
    from taco_app.cota.prompt import MAX_REPLIES
    from taco_app.store.export import FORMATS, RATINGS
    from taco_app.weights import SLOT_KEYS

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices

    def option(command: str, dest: str):
        return next(a for a in commands[command]._actions if a.dest == dest)

    assert tuple(option("run", "family").choices) == tuple(option("prompt", "family").choices) == FAMILIES
    assert tuple(option("run", "quantisation").choices) == settings.QUANTISATIONS
    assert option("run", "max_replies").default == MAX_REPLIES
    assert tuple(option("download", "only").choices) == SLOT_KEYS
    assert tuple(option("export", "format").choices) == tuple(FORMATS)
    assert tuple(option("export", "rating").choices) == RATINGS
    flags = {flag for action in parser._actions for flag in action.option_strings}
    flags |= {flag for sub in commands.values() for action in sub._actions for flag in action.option_strings}
    declared = {settings.flag(name) for name in Settings.model_fields if settings.flag(name)}
    assert declared and declared <= flags  # every declared flag exists on the command line
