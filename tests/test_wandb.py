"""logger=wandb (dlx/track/wandb_logger.py): offline run files in the run dir, read back from
W&B's own record log; a resumed run logs on into the same W&B run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dlx.errors import UserError
from dlx.track.loggers import check_loggers, make_logger

pytest.importorskip("wandb")  # installed by `make test` (requirements.lock); an extra for users


def records(path: Path) -> list:
    """The protobuf Records of a .wandb file: LevelDB's log format (32 KiB blocks; chunks of
    crc32c(4) length(2) type(1) data, type 1 whole, 2/3/4 first/middle/last) after W&B's
    7-byte header."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, buf, out = path.read_bytes(), 7, 32768, b"", []
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        data, pos = raw[pos + 7 : pos + 7 + n], pos + 7 + n
        buf = data if kind in (1, 2) else buf + data
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def history(path: Path) -> list[dict]:
    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in r.history.item})  # fmt: skip
    return rows


def test_offline_run_in_the_run_dir_and_resume_into_the_same_run(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = tmp_path / "digits" / "2026-01-01_00-00-00_abcd"
    (run / "plots").mkdir(parents=True)
    plt.plot([1, 2])
    plt.savefig(run / "plots" / "learning_curves.png")
    cfg = OmegaConf.create({
        "recipe": "digits", "data": {"batch_size": 32}, "outputs": {"dir": str(tmp_path)},
        "logger": {"jsonl": {}, "wandb": {"mode": "offline", "project": None}},
    })  # fmt: skip
    logger = make_logger(list(cfg.logger), run, cfg)
    logger.write({"step": 10, "epoch": 1, "train/loss": 2.25, "note": "text"})
    logger.write({"step": 20, "epoch": 1, "train/loss": 1.5})
    logger.write({"step": 20, "epoch": 1, "val/loss": 1.75, "val/count": 400})
    (run / "summary.json").write_text(json.dumps({"status": "preempted", "val": {}}))
    logger.close()
    (first,) = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))
    rows = history(first)
    assert [(r["_step"], r.get("train/loss"), r.get("val/loss")) for r in rows] == [
        (10, 2.25, None),
        (20, 1.5, 1.75),
    ]
    assert rows[1]["plots/learning_curves/_type"] == "image-file"  # plots/ as images
    (start,) = [r.run for r in records(first) if r.WhichOneof("record_type") == "run"]
    config = {i.key: json.loads(i.value_json) for i in start.config.update}
    assert start.project == "digits" and start.display_name == run.name
    assert config["data.batch_size"] == 32
    saved = json.loads((run / "wandb.json").read_text())
    assert saved["id"] == start.run_id and saved["last_step"] == 20
    # Resumed at step 20: the same W&B id; steps at or before the last logged one are dropped
    logger = make_logger(list(cfg.logger), run, cfg, resume_step=20)
    logger.write({"step": 15, "epoch": 1, "train/loss": 9.0})
    logger.write({"step": 30, "epoch": 2, "train/loss": 1.0})
    (run / "summary.json").write_text(
        json.dumps({"status": "finished", "test": {"test/accuracy": 0.875}})
    )
    logger.close()
    second = next(p for p in (run / "wandb").glob("offline-run-*/run-*.wandb") if p != first)
    assert second.name == first.name  # run-<id>.wandb: one run, two offline segments
    assert [r["_step"] for r in history(second) if "train/loss" in r] == [30]
    summary = {}
    for r in records(second):
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        if r.WhichOneof("record_type") == "exit":
            assert r.exit.exit_code == 0
    assert summary["test/accuracy"] == 0.875 and summary["status"] == "finished"


def test_missing_package_and_bad_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(UserError) as err:
        check_loggers(["wandb"])
    assert "dlx[wandb]" in (err.value.hint or "")
    monkeypatch.undo()
    cfg = OmegaConf.create({"recipe": "digits", "logger": {"wandb": {"mode": "onlne"}}})
    with pytest.raises(UserError, match=r"logger\.wandb\.mode must be one of"):
        make_logger(["wandb"], tmp_path, cfg)
