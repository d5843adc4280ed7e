#!/usr/bin/env bash
# The GPU check in one command: the GPU-marked tests and the 8B benchmark (4-bit and bf16), on a
# machine with a CUDA GPU that has Python 3.12, torch and transformers and nothing else, no internet.
# Everything else comes from wheels in a local folder, installed into a private temporary folder.
#
#   scripts/gpu_check.sh wheels             # where there is internet: fetch the wheels into .whl/
#   scripts/gpu_check.sh run [OUT.json]     # on the GPU machine: run, write one JSON report
#
# `run` exits 0 only when every GPU test passed (none skipped) and the benchmark reported; the JSON
# is written either way. Settings (environment):
#   PYTHON                    the interpreter with torch and transformers (python3)
#   GPU_CHECK_WHEELS          the wheel folder (.whl)
#   GPU_CHECK_OUT             the report, if not given as an argument (gpu-check.json)
#   GPU_CHECK_BUDGET          seconds for the whole run (480); the benchmark gets what the tests leave
#   GPU_CHECK_TEST_TIMEOUT    seconds for the GPU tests (120)
#   GPU_CHECK_PYTHON_VERSION  the Python the wheels are fetched for (3.12)
set -euo pipefail
caller=$PWD  # a relative OUT.json is the caller's
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
LIST=scripts/gpu-check-wheels.txt

# name==version for each line of the list; a bare name is pinned by requirements.txt/requirements-dev.txt.
pins() {
  "$PYTHON" - "$LIST" requirements.txt requirements-dev.txt <<'EOF'
import re, sys

def key(name):
    return re.sub(r"[-_.]+", "-", name).lower()

def lines(path):
    for line in open(path, encoding="utf-8"):
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            yield line

pinned = {}
for path in sys.argv[2:]:
    for line in lines(path):
        name, _, version = line.partition("==")
        pinned[key(re.sub(r"\[.*\]", "", name))] = version
for line in lines(sys.argv[1]):
    name, _, version = line.partition("==")
    version = version or pinned.get(key(name))
    if not version:
        sys.exit(f"{sys.argv[1]}: {name} has no version here nor in requirements.txt or requirements-dev.txt")
    if key(name) in pinned and pinned[key(name)] != version:
        sys.exit(f"{sys.argv[1]}: {name}=={version}, but the requirements pin {pinned[key(name)]}")
    print(f"{name}=={version}")
EOF
}

fetch_wheels() {
  local version=${GPU_CHECK_PYTHON_VERSION:-3.12} platforms=() n
  local specs
  specs=$(pins)
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
  mkdir -p "$WHEELS"
  rm -f "$WHEELS"/*.whl  # one version of each
  # shellcheck disable=SC2086  # one argument per pin
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" -d "$WHEELS" $specs
  echo "$(ls "$WHEELS"/*.whl | wc -l) wheels for Python $version in $WHEELS ($(du -sh "$WHEELS" | cut -f1)):"
  ls "$WHEELS"
}

install_wheels() {
  local site=$1
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "no wheels in $WHEELS: run 'scripts/gpu_check.sh wheels' (or 'make gpu-wheels')" \
      "on a machine with internet first" >&2
    return 1
  fi
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --root-user-action=ignore --target "$site" "$WHEELS"/*.whl
  else  # no pip: a wheel is a zip laid out as it is installed
    "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$site" "$WHEELS"/*.whl
  fi
}

run_check() {
  local out=${1:-${GPU_CHECK_OUT:-gpu-check.json}}
  [[ $out == /* ]] || out="$caller/$out"
  local budget=${GPU_CHECK_BUDGET:-480} test_timeout=${GPU_CHECK_TEST_TIMEOUT:-120}
  local started files test_rc=0 bench_rc=0 bench_timeout
  started=$(date +%s)
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/taco-gpu-check-XXXXXX")  # global: the trap runs after this function
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/site" "$scratch/tmp"
  install_wheels "$scratch/site"
  # Ours first, over any other version on the machine; temporary files (the 16 GB checkpoint) in scratch.
  export PYTHONPATH="$scratch/site${PYTHONPATH:+:$PYTHONPATH}" TMPDIR="$scratch/tmp" TACO_HOME="$scratch/home"
  export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

  # Only the files that hold GPU tests: collecting the others would import the web app, OCR, … too.
  files=$(grep -l 'mark\.gpu' tests/test_*.py || true)
  echo "== GPU tests: $files"
  # shellcheck disable=SC2086
  timeout -k 10 "$test_timeout" "$PYTHON" -m pytest -m gpu -q -rs --junitxml "$scratch/tests.xml" $files \
    2>&1 | tee "$scratch/tests.log" || test_rc=${PIPESTATUS[0]}

  bench_timeout=$((budget - ($(date +%s) - started) - 20))
  bench_timeout=$((bench_timeout < 60 ? 60 : bench_timeout))
  echo "== benchmark: --size real, 4bit and none (bf16), at most ${bench_timeout}s"
  timeout -k 10 "$bench_timeout" "$PYTHON" -m benchmarks.bench_model --size real --quantisation 4bit \
    --quantisation none --out "$scratch/bench.json" 2>&1 | tee "$scratch/bench.log" || bench_rc=${PIPESTATUS[0]}

  "$PYTHON" - "$out" "$scratch" "$files" "$test_rc" "$bench_rc" "$started" <<'EOF'
"""One JSON report of the GPU check: the machine, the tests' outcome, the benchmark's report."""
import json, sys, time, xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

out, scratch, files = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split()
test_rc, bench_rc, started = map(int, sys.argv[4:])
TIMED_OUT = (124, 137)


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tail(path, n=4000):
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def test_cases():
    path = scratch / "tests.xml"
    if not path.is_file():
        return []
    cases = []
    for case in ET.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or "")[:500]
                break
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome, "message": message})
    return cases


import torch  # noqa: E402 - after the report's helpers: the slow import comes last

cuda = torch.cuda.is_available()
cases = test_cases()
counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
bench_path = scratch / "bench.json"
bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
tests_ok = test_rc == 0 and counts["passed"] > 0 and not (counts["failed"] or counts["error"] or counts["skipped"])
bench_ok = bench_rc == 0 and bench is not None
report = {
    "ok": tests_ok and bench_ok,
    "cuda": cuda,
    "machine": {
        "gpu": torch.cuda.get_device_name() if cuda else None, "torch_cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        **{name: version(name) for name in ("torch", "transformers", "bitsandbytes", "accelerate")},
    },
    "duration_s": round(time.time() - started),
    "tests": {
        "command": "pytest -m gpu " + " ".join(files), "exit_code": test_rc, "timed_out": test_rc in TIMED_OUT,
        "passed": counts["passed"], "failed": counts["failed"], "errors": counts["error"], "skipped": counts["skipped"],
        "cases": cases, "log_tail": "" if tests_ok else tail(scratch / "tests.log"),
    },
    "bench": {
        "command": "python -m benchmarks.bench_model --size real --quantisation 4bit --quantisation none",
        "exit_code": bench_rc, "timed_out": bench_rc in TIMED_OUT, "report": bench,
        "log_tail": "" if bench_ok else tail(scratch / "bench.log", 2000),
    },
}
Path(out).write_text(json.dumps(report, indent=2) + "\n")
t = report["tests"]
print(f"tests: {t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped"
      f" (exit {test_rc});"
      f" benchmark: {len(bench['runs']) if bench else 0} runs (exit {bench_rc}); cuda: {cuda}; report: {out}")
sys.exit(0 if report["ok"] else 1)
EOF
}

case ${1:-run} in
  wheels) fetch_wheels ;;
  run) shift $(($# > 0 ? 1 : 0)); run_check "$@" ;;
  *) echo "usage: scripts/gpu_check.sh wheels | run [OUT.json]" >&2; exit 2 ;;
esac
