"""Load: 16 sessions at once through the web app's API, on 127.0.0.1, bounded in count and time.

Every session replays its own script (Calculate, Crop, ZoomIn, Terminate: cheap tools, run live) so
its answer and stored steps say whose it is. All must finish, all must be in the store with every
step, and no session may show another's text. ``.ci/run`` repeats this on PostgreSQL (``store``).
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest

from taco_app.store import queries
from taco_app.ui.studio import ExampleChoice

from .conftest import ROOT
from .ui_server import running

pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

SESSIONS = 16
DEADLINE_S = 240  # for all of them together; the loop below never waits longer
PHOTO = ROOT / "assets" / "examples" / "astronaut.png"


def script(k: int) -> list[str]:
    def step(thought, name, **arguments):
        return json.dumps({"thought": thought, "actions": [{"name": name, "arguments": arguments}]})

    return [
        step(f"Session {k} computes its number.", "Calculate", expression=f"{k} * 1000 + 7"),
        step(f"Session {k} crops.", "Crop", image="image-0", bbox=[0.1 + k / 100, 0.1, 0.6, 0.6]),
        step(f"Session {k} zooms.", "ZoomIn", image="image-1", bbox=[0.2, 0.2, 0.8, 0.8], zoom_factor=2),
        step(f"Session {k} answers.", "Terminate", answer=f"session {k}: {k * 1000 + 7}"),
    ]


@pytest.mark.store
def test_sixteen_concurrent_sessions(tmp_path):
    examples = []
    for k in range(SESSIONS):
        path = tmp_path / f"load-{k}.json"
        path.write_text(json.dumps(script(k)))
        examples.append(ExampleChoice(f"Load {k}", PHOTO, f"Session {k}?", path))
    with running(tmp_path / "home", examples) as (url, studio):
        results: dict[int, tuple[float, list, list]] = {}
        errors: list[BaseException] = []

        def one(k: int) -> None:
            try:
                client = Client(url, verbose=False, download_files=False)  # a browser fetches images only to show them
                started = time.perf_counter()
                job = client.submit([handle_file(str(PHOTO))], f"Session {k}: what is {k} * 1000 + 7?", f"Load {k}",
                                    False, api_name="/ask")
                final = job.result(timeout=DEADLINE_S)  # waits; iterating the job would busy-poll in this process
                results[k] = (time.perf_counter() - started, job.outputs(), final)
            except BaseException as err:  # reported below with the others
                errors.append(err)

        threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(SESSIONS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, DEADLINE_S - (time.perf_counter() - started)))
        wall = time.perf_counter() - started
        assert not errors, errors[:3]
        assert sorted(results) == list(range(SESSIONS)), "every session finished within the deadline"

        latencies = sorted(r[0] for r in results.values())
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        print(f"{SESSIONS} concurrent sessions on {studio.store.url.split(':')[0]}: all done in {wall:.1f} s;"
              f" per session median {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s")

        for k, (_elapsed, updates, final) in results.items():
            mine = f"session {k}: {k * 1000 + 7}"
            assert mine in str(final[0]), k
            others = [f"Session {j} " for j in range(SESSIONS) if j != k]
            for update in updates:  # no update of this client ever shows another session's text
                text = str(update[0])
                assert not any(other in text for other in others), (k, text[:200])
            trace = queries.get_trace(studio.store, final[5].split("`")[1])
            assert trace.session["status"] == "finished" and trace.session["answer"] == mine
            assert [s["action_name"] for s in trace.steps] == ["Calculate", "Crop", "ZoomIn", "Terminate"]
            assert f"{k * 1000 + 7}" in trace.steps[0]["observation"]
            assert len([i for i in trace.images if i.role == "tool"]) == 2
        assert queries.list_sessions(studio.store).total == SESSIONS
