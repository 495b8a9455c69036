"""Fault test for DMF training: kill -9 at random points, then resume (issue 12).

A small ``train_dmf`` run with a checkpoint saved every epoch is started in a
subprocess and SIGKILLed at random points (after a random number of epochs,
plus a random fraction of an epoch, so kills land inside epochs and inside
checkpoint writes).  After every kill the checkpoint is either absent or a
complete, verified checkpoint of this run (atomic writes: never torn), and
its epoch never goes back.  A final run with ``resume="require"`` resumes
from it and ends exactly where an uninterrupted run ends (same trace, same
epochs).  A torn checkpoint written by hand is named by ``resume="require"``
and recomputed (with a warning) by ``resume="auto"``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import queue
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import mfjax.data as mdata
import mfjax.models as mm

EPOCHS = 8
ROOT = pathlib.Path(__file__).resolve().parents[1]

# the run, shared by the child script and the in-process runs (same data, same configs)
SETUP = """
import mfjax.data as mdata
import mfjax.models as mm
CFG = mm.DMFConfig(row_widths=(16, 8), col_widths=(16, 8), dropout_rate=0.1)
TC = mm.TrainConfig(epochs={epochs}, block_rows=30, block_cols=30, learning_rate=3e-3,
                    lr_decay_every=1000, eval_every=1, checkpoint_every=1)
tr, va, _ = mdata.split(mdata.synthetic(90, 70, rank=3, density=0.3, noise=0.2, seed=1),
                        (0.8, 0.1, 0.1), seed=0)
""".format(epochs=EPOCHS)

CHILD = SETUP + """
import sys, time
ck = sys.argv[1]
print("child started", flush=True)

def log(line):  # an epoch of this tiny run takes milliseconds: pace it so that kills land inside the run
    print(line, flush=True)
    time.sleep(0.1)

res = mm.train_dmf(tr, va, CFG, TC, checkpoint_path=ck, resume="auto", log=log)
print(f"child finished {res.epochs_run}", flush=True)
"""


def _setup():
    ns: dict = {}
    exec(SETUP, ns)  # noqa: S102 (our own constant text)
    return ns["tr"], ns["va"], ns["CFG"], ns["TC"]


def _reader(stream, lines: queue.Queue):
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _run_and_kill(script: pathlib.Path, ck: pathlib.Path, kill_after_epoch: int, extra_s: float,
                  deadline: float) -> list[str]:
    """Start the child; SIGKILL it ``extra_s`` seconds after it logs ``epoch kill_after_epoch``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(script), str(ck)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if line.startswith(f"epoch {kill_after_epoch}:"):
                time.sleep(extra_s)
                break
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return seen


def _check_never_torn(ck: pathlib.Path, last_epoch: int, note: str) -> int:
    """The checkpoint is absent or complete and verified; returns its epoch (0 if absent)."""
    if not ck.exists():
        assert last_epoch == 0, f"{note}: the checkpoint disappeared after epoch {last_epoch}"
        return 0
    _, meta = mm.read_checkpoint(ck)  # raises CorruptCheckpointError on a torn file
    epoch = int(meta["epoch"])
    assert last_epoch <= epoch <= EPOCHS, (note, last_epoch, epoch)
    assert len(meta["trace"]["train_loss"]) == epoch, note
    return epoch


@pytest.fixture(scope="module")
def reference():
    tr, va, cfg, tc = _setup()
    return mm.train_dmf(tr, va, cfg, tc)


def test_kill_9_during_dmf_training_then_resume(tmp_path, reference):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    note = f"fault seed {seed}"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    ck = tmp_path / "run" / "dmf.ckpt"
    deadline = time.monotonic() + 120.0
    epoch, kills, epochs_seen = 0, 0, []
    for _ in range(2):  # two kills (each child compiles afresh: ~10 s)
        if epoch >= EPOCHS - 1 or time.monotonic() > deadline - 15:
            break
        # at most 3 epochs on per kill, so that every run has room for at least two kills; the
        # first kill comes after epoch 2 is logged, so that the checkpoint of epoch 1 is complete
        # by then (a kill right after epoch 1 can land inside the first, slowest write, twice)
        target = rng.randint(max(2, epoch + 1), min(EPOCHS - 1, epoch + 3))
        seen = _run_and_kill(script, ck, target, rng.uniform(0.0, 0.15), deadline)
        kills += 1
        resumed = [s for s in seen if s.startswith("resumed from")]
        if epoch > 0:  # a later child resumed from the checkpoint the earlier one left
            assert resumed == [f"resumed from {ck} at epoch {epoch}"], (note, seen)
        assert not any("training from scratch" in s for s in seen), (note, seen)
        epoch = _check_never_torn(ck, epoch, f"{note}, kill {kills}")
        epochs_seen.append(epoch)
    assert kills >= 2, f"{note}: only {kills} kill(s) fit in the time box"
    assert epoch > 0, f"{note}: no checkpoint was ever written ({epochs_seen})"

    tr, va, cfg, tc = _setup()
    log: list[str] = []
    res = mm.train_dmf(tr, va, cfg, tc, checkpoint_path=ck, resume="require", log=log.append)
    assert log[0] == f"resumed from {ck} at epoch {epoch}", (note, log)
    # the interrupted run ends where an uninterrupted one ends: same epochs, same numbers
    assert res.epochs_run == reference.epochs_run == EPOCHS, note
    assert res.train_config == reference.train_config and res.config == reference.config
    np.testing.assert_allclose(res.trace["train_loss"], reference.trace["train_loss"], rtol=1e-5,
                               err_msg=note)
    np.testing.assert_allclose(res.trace["val_rmse"], reference.trace["val_rmse"], rtol=1e-5,
                               err_msg=note)
    assert res.best_epoch == reference.best_epoch, note
    # leftover temp files of a killed write are never read: only the checkpoint counts
    _, meta = mm.read_checkpoint(ck)
    assert meta["epoch"] == EPOCHS
    others = [p.name for p in ck.parent.iterdir() if p != ck]
    assert all(n.startswith(f".{ck.name}.") and n.endswith(".tmp") for n in others), others


def test_torn_checkpoint_is_named_by_require_and_recomputed_by_auto(tmp_path, reference):
    tr, va, cfg, tc = _setup()
    ck = tmp_path / "dmf.ckpt"
    short = mm.train_dmf(tr, va, cfg, dataclasses.replace(tc, epochs=2), checkpoint_path=ck)
    assert short.epochs_run == 2
    raw = ck.read_bytes()
    ck.write_bytes(raw[: len(raw) * 2 // 3])  # torn by hand: the first two thirds
    with pytest.raises(mm.CorruptCheckpointError) as e:
        mm.train_dmf(tr, va, cfg, tc, checkpoint_path=ck, resume="require")
    assert str(ck) in str(e.value) and "Unpack failed" not in str(e.value)
    with pytest.warns(mm.CheckpointIgnoredWarning, match="training from scratch"):
        res = mm.train_dmf(tr, va, cfg, tc, checkpoint_path=ck, resume="auto")
    assert res.epochs_run == EPOCHS
    np.testing.assert_allclose(res.trace["val_rmse"], reference.trace["val_rmse"], rtol=1e-5)
    assert mm.read_checkpoint(ck)[1]["epoch"] == EPOCHS  # rewritten intact
