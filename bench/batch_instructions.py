"""The instructions one batch of 1,000 events costs the web side, counted by callgrind.

Rates and even CPU seconds move 10-20 % between runs of the same code on a shared VM; an
instruction count repeats within a fraction of a percent, so a change of a few percent to
the batch path shows. The batches go through the whole app in-process (Flask's test client:
no gunicorn, no sockets to the client), with the garbage collector set as the web worker
sets it (`gunicorn.conf.py`), against a private Redis and SQLite. Needs valgrind.
    python bench/batch_instructions.py [--batches 10]
Prints the instructions a batch, median and spread of the batches' own counts.
"""

import argparse
import gc
import json
import os
import random
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sse_common as common  # noqa: E402

from webapp.notify import service_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHILD = "TB_BENCH_UNDER_CALLGRIND"  # set in the copy of this script valgrind runs
USERS = 50


def event(uid, title):
    return {"type": "ORDER_EXECUTED", "user_id": uid, "title": title,
            "message": "Filled 0.5 BTC at 65000", "data": {"qty": 0.5, "price": 65000}}


def callgrind(*args):
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True,
                   capture_output=True)


def counted(out):
    """The instructions callgrind's newest dump holds."""
    newest = max(out.parent.glob(f"{out.name}*"), key=lambda f: f.stat().st_mtime)
    totals = [line for line in newest.read_text().splitlines()
              if line.startswith(("summary:", "totals:"))]
    return int(totals[-1].split()[1])


def measure(batches, out):
    """Under callgrind: each batch's instructions."""
    tmp = Path(tempfile.mkdtemp(prefix="tb-bench-instr-"))
    redis_process, redis_url = common.start_redis(tmp / "redis")
    try:
        app, users = common.make_users(f"sqlite:///{tmp / 'bench.db'}", redis_url, USERS)
        with app.app_context():
            token = service_tokens.create("bench")[1]
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        pick = random.Random(7).choice  # the same batches in every run
        bodies = [json.dumps([event(pick(users)[0], f"batch {b}.{i}")
                              for i in range(1000)]).encode() for b in range(batches + 3)]
        for body in bodies[:3]:  # warm: scripts loaded, connections open, users known
            assert client.post("/api/v1/events", data=body, headers=headers).status_code == 202
        young = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["YOUNG_GC_THRESHOLD"]
        gc.collect()
        gc.freeze()
        gc.set_threshold(young, *gc.get_threshold()[1:])
        each = []
        for body in bodies[3:]:
            callgrind("--zero")
            callgrind("--instr=on")
            response = client.post("/api/v1/events", data=body, headers=headers)
            callgrind("--instr=off")
            callgrind("--dump")
            assert response.status_code == 202
            each.append(counted(out))
        return each
    finally:
        common.stop(redis_process)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    if os.environ.get(CHILD):
        print(json.dumps(measure(args.batches, Path(os.environ[CHILD]))))
        return
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--batches", str(args.batches)],
            env={**os.environ, CHILD: str(out)}, capture_output=True,
            text=True, check=False, cwd=ROOT)
        if run.returncode:
            raise SystemExit(run.stderr[-3000:])
        each = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"a batch of 1,000 events: {statistics.median(each) / 1e6:.2f} million instructions "
          f"(median of {len(each)}; {min(each) / 1e6:.2f}-{max(each) / 1e6:.2f})")


if __name__ == "__main__":
    main()
