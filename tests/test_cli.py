"""The command line, as people and scripts call it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw, ImageFont

from .conftest import ROOT


def app(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, check=check, timeout=300)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def draw_fuel_sign(path) -> None:
    """A fuel-price sign, drawn here: prices the model has to read, then divide into $50."""
    img = Image.new("RGB", (1024, 768), "#87a8c8")
    draw = ImageDraw.Draw(img)
    draw.rectangle([140, 60, 884, 600], fill="white", outline="#0b3d91", width=12)
    big = ImageFont.load_default(size=64)
    draw.text((512, 130), "GAS PRICES", font=big, fill="#0b3d91", anchor="mm")
    for i, (grade, price) in enumerate([("Unleaded", "3.79"), ("Super", "4.09"), ("Diesel", "4.39")]):
        y = 260 + i * 120
        draw.text((190, y), grade, font=big, fill="black", anchor="lm")
        draw.text((840, y), f"${price}", font=big, fill="#c00000", anchor="rm")
    img.save(path)


@pytest.mark.slow
def test_fuel_sign_ocr_calculate_terminate(tmp_path):
    sign, script = tmp_path / "sign.png", tmp_path / "script.json"
    draw_fuel_sign(sign)
    script.write_text(json.dumps([
        '{"thought":"I need to read the prices on the sign.","actions":[{"name":"OCR","arguments":{"image":"image-0"}}]}',
        '{"thought":"Unleaded costs $3.79 per gallon.","actions":[{"name":"Calculate","arguments":{"expression":"50 / 3.79"}}]}',
        '{"thought":"So about 13.19 gallons.","actions":[{"name":"Terminate","arguments":{"answer":"About 13.19 gallons"}}]}',
    ]))
    result = app("run", "--image", str(sign), "--question", "How much gas can I buy with $50?", "--backend", f"replay:{script}", "--json")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    assert all("type" in line and "step" in line for line in lines)
    executed = [line for line in lines if line["type"] == "observation"]
    ocr, calc = executed
    assert ocr["action"] == {"name": "OCR", "arguments": {"image": "image-0"}}
    for price in ("3.79", "4.09", "4.39"):
        assert price in ocr["observation"], ocr["observation"]
    assert ocr["observation"].startswith("OBSERVATION:\n{'text': '")
    assert calc["observation"].startswith(f"OBSERVATION:\n{{'result': {50 / 3.79!r}}}")
    assert calc["output"] == {"result": 13.192612137203167}
    final = lines[-1]
    assert final["type"] == "final" and final["answer"] == "About 13.19 gallons" and final["steps"] == 3
    assert len(final["session_id"]) == 32


def test_run_json_contract_with_cheap_tools(tmp_path):
    image, script = tmp_path / "white.png", tmp_path / "s.json"
    Image.new("RGB", (64, 48), "white").save(image)
    script.write_text(json.dumps([
        '{"thought":"crop","actions":[{"name":"Crop","arguments":{"image":"image-0","bbox":[0.25,0.25,0.75,0.75]}}]}',
        "not json at all",
        '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"white"}}]}',
    ]))
    result = app("run", "--image", str(image), "--question", "What colour?", "--backend", f"replay:{script}", "--json", check=True)
    lines = json_lines(result.stdout)
    types = [line["type"] for line in lines if line["type"] != "thought_delta"]
    assert types == ["session_started", "step_started", "action_parsed", "tool_started", "image_produced", "observation",
                     "step_started", "parse_error", "step_started", "action_parsed", "answer", "final"]
    crop = next(line for line in lines if line["type"] == "observation")
    assert crop["observation"].startswith("OBSERVATION:\n{'image': 'image-1: <image>'}")
    assert lines[-1]["answer"] == "white"


def test_model_failure_still_exits_zero(tmp_path):
    image, script = tmp_path / "x.png", tmp_path / "s.json"
    Image.new("RGB", (8, 8)).save(image)
    script.write_text(json.dumps(["{}"]))
    result = app("run", "--image", str(image), "--question", "q", "--backend", f"replay:{script}", "--json")
    assert result.returncode == 0
    final = json_lines(result.stdout)[-1]
    assert final["type"] == "final" and final["answer"] is None


def test_human_output(tmp_path):
    image, script = tmp_path / "x.png", tmp_path / "s.json"
    Image.new("RGB", (8, 8)).save(image)
    script.write_text(json.dumps(['{"thought":"easy","actions":[{"name":"Terminate","arguments":{"answer":"8"}}]}']))
    out = app("run", "--image", str(image), "--question", "q", "--backend", f"replay:{script}", check=True).stdout
    assert "thought: easy" in out and "answer: 8" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--image", "/nonexistent.jpg"], "image not found"),
        (["--image", "pyproject.toml"], "not an image"),
        (["--backend", "replay:/nonexistent.json"], "replay script not found"),
        (["--backend", "bogus"], "unknown backend"),
    ],
)
def test_usage_errors_are_one_line_and_nonzero(tmp_path, args, message):
    image = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(image)
    script = tmp_path / "s.json"
    script.write_text("[]")
    base = {"--image": str(image), "--backend": f"replay:{script}"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = app("run", "--question", "q", *[x for kv in base.items() for x in kv])
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_truncated_image_is_a_usage_error(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (300, 300), "red").save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    result = app("run", "--image", str(bad), "--question", "q", "--backend", "replay:x.json")
    assert result.returncode == 2 and "cannot read image" in result.stderr


def test_a_huge_image_is_refused_before_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 megapixels, a few kB on disk
    result = app("run", "--image", str(huge), "--question", "q", "--backend", "replay:x.json")
    assert result.returncode == 2
    assert "12000x12000 (144 megapixels); the limit is 64 megapixels" in result.stderr


# app.py on a machine without CUDA, wherever the test runs: the app's one CUDA check answers no.
WITHOUT_CUDA = ("import runpy, sys; import taco_app.weights as weights; weights.cuda_available = lambda: False;"
                " sys.argv[0] = 'app.py'; runpy.run_path('app.py', run_name='__main__')")


def test_auto_without_a_gpu_says_why_and_what_works(tmp_path):
    image = tmp_path / "ok.png"
    Image.new("RGB", (8, 8)).save(image)
    result = subprocess.run([sys.executable, "-c", WITHOUT_CUDA, "run", "--image", str(image), "--question", "q"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no CUDA GPU here" in result.stderr and "replay:assets/examples/fuel_prices.replay.json" in result.stderr


def test_doctor_lists_every_action():
    out = app("doctor", check=True).stdout
    for name in ("OCR", "Crop", "Calculate", "Terminate", "GetObjects"):
        assert name in out
    assert "easyocr" in out


def test_doctor_says_where_each_setting_came_from(tmp_path):
    """As a script calls it: a flag, an environment variable and a default, each named as such; no secret shown."""
    import os

    env = {**os.environ, "TACO_KB_TIMEOUT": "2.5", "TACO_AUTH": "ana:hidden-password"}
    done = subprocess.run([sys.executable, "app.py", "--home", str(tmp_path / "flagged"), "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("TACO_")}
    assert rows["TACO_HOME"].split()[1:] == [str(tmp_path / "flagged"), "flag", "(--home)"]
    assert rows["TACO_KB_TIMEOUT"].split()[1:] == ["2.5", "environment", "(TACO_KB_TIMEOUT)"]
    assert rows["TACO_TOOL_TIMEOUT"].split()[1:] == ["120", "default"]
    assert "hidden-password" not in done.stdout and "(TACO_AUTH)" in rows["TACO_AUTH"]
    assert not (tmp_path / "flagged").exists()  # doctor looks; it makes no data folder


def test_a_bad_setting_stops_every_command_with_one_line(tmp_path):
    import os

    env = {**os.environ, "TACO_HOME": str(tmp_path / "home"), "TACO_PREFIX_CACHE": "sometimes"}
    for args in (["prompt"], ["import", "nothing.json"], ["run", "--question", "q"]):
        done = subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == ("error: TACO_PREFIX_CACHE must be on or off (1, true, yes, on / 0, false, no, off),"
                               " got 'sometimes': fix or unset it\n")
    assert not (tmp_path / "home").exists()


def test_importing_the_package_does_not_import_torch():
    code = "import sys, taco_app.cli, taco_app.runner, taco_app.tools; print('torch' in sys.modules, 'gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_prompt_reads_a_trace_only_from_a_regular_file_of_bounded_size(tmp_path):
    """A FIFO used to hang `prompt --trace`, /dev/zero to eat the memory, deep JSON to print a traceback."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000)
    expected = {fifo: "a FIFO", "/dev/zero": "a character device", deep: "recursion", tmp_path / "none.json": "cannot open"}
    for path, words in expected.items():
        done = app("prompt", "--trace", str(path))
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr


def test_a_run_writes_nothing_to_the_system_temp_folder(tmp_path):
    """torch under easyocr made an empty, world-listable torchinductor_<user> folder in TMPDIR."""
    import os

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    script = tmp_path / "s.json"
    script.write_text(json.dumps(['{"thought":"read","actions":[{"name":"OCR","arguments":{"image":"image-0"}}]}',
                                  '{"thought":"done","actions":[{"name":"Terminate","arguments":{"answer":"x"}}]}']))
    done = subprocess.run([sys.executable, "app.py", "--home", str(tmp_path / "home"), "run", "--image",
                           str(ROOT / "assets" / "examples" / "fuel_prices.png"), "--question", "q", "--backend",
                           f"replay:{script}", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout)[-1]["status"] == "finished"
    assert list(tmp.iterdir()) == []
