"""The first example run of a freshly started app, with the tool models warmed first and without.

Each case runs in a fresh Python process (the tools' models are loaded once per process): start the
web app on 127.0.0.1, then time the fuel-sign example (OCR → Calculate → Terminate, a recorded reply
per step, the tools live) from the Run request (the page's ``/ask``) to its answer, twice. Before the
second run the OCR tool's result cache is emptied, so the second run reads the picture again with the
loaded model instead of answering from the cache.

warm: the app warms the examples' tool models in the background once it is served (what ``python
app.py ui`` does); the first run starts after the status line says they are ready.
cold: no warming (``Studio(warm=False)``); the first run loads EasyOCR itself.

Run with ``python -m benchmarks.bench_first_run`` (about a minute here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUEL = ROOT / "assets" / "examples" / "fuel_prices.png"
QUESTION = "How much gas can I buy with $50?"
LABEL = "Replay example: fuel_prices"


def child(mode: str) -> dict:
    os.environ["TACO_HOME"] = tempfile.mkdtemp(prefix="taco-bench-first-run-")
    from gradio_client import Client, handle_file

    from taco_app.store.db import Store
    from taco_app.tools import default_tools
    from taco_app.ui.app import serve, stop
    from taco_app.ui.studio import Studio
    from tests.ui_server import chat_text, free_port

    started = time.perf_counter()
    studio = Studio(Store.open(), probe=False, local_reason="benchmark", warm=mode == "warm")
    port = free_port()
    app = serve("127.0.0.1", port, block=False, studio=studio)
    result = {"mode": mode, "served_s": time.perf_counter() - started}
    if studio.warmup is not None:
        studio.warmup.wait()
        result["warmed_s"] = time.perf_counter() - started
        result["tools"] = {s.name: [s.state, round(s.seconds or 0, 2), s.message] for s in studio.warmup.states()}
        result["status"] = studio.status_line()
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for run in ("first_run_s", "second_run_s"):
            default_tools().get("OCR")._cache.clear()  # the picture is read again, not answered from the cache
            began = time.perf_counter()
            chat = client.predict([handle_file(str(FUEL))], QUESTION, LABEL, False, api_name="/ask")[0]
            result[run] = time.perf_counter() - began
            assert "About 14.33 gallons" in chat_text(chat), chat_text(chat)
    finally:
        stop(app)
    return result


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        return
    results = []
    for mode in ("cold", "warm"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_first_run", "--child", mode], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'':6} {'served':>8} {'warmed':>8} {'1st run':>8} {'2nd run':>8}   (seconds from process start / per run)")
    for r in results:
        warmed = f"{r['warmed_s']:8.1f}" if "warmed_s" in r else f"{'-':>8}"
        print(f"{r['mode']:6} {r['served_s']:8.1f} {warmed} {r['first_run_s']:8.1f} {r['second_run_s']:8.1f}")
    for r in results:
        if "tools" in r:
            print("warmed:", ", ".join(f"{name} {state} in {s:.1f} s" + (f" ({msg})" if msg else "")
                                       for name, (state, s, msg) in r["tools"].items()))
            print("status line:", r["status"].replace("\n\n", " | "))


if __name__ == "__main__":
    main()
