"""logger=wandb: Weights & Biases, offline by default (optional extra: pip install 'dlx[wandb]').

Offline, W&B writes its run files into the run dir (`<run>/wandb/offline-run-*`), nothing
leaves the machine, and `wandb sync <run>/wandb/offline-run-*` uploads them later (a cluster
node without internet, a laptop on a train). `logger.wandb.mode=online` logs live (needs
`wandb login` or WANDB_API_KEY).

One W&B run per dlx run: its id is kept in `<run>/wandb.json`, so a resumed dlx run logs on
into the same W&B run (`resume="allow"` with that id; offline, each resume writes one more
offline-run folder with the same id, and `wandb sync` of all of them appends them to the one
run). Logged: the flat config, every numeric metric at its global step (a resumed run starts
after the last step it logged), at close the summary's metrics and plots/*.png as images, and
the run's end (finished: exit 0; preempted: marked preempting; failed/diverged: exit 1).
W&B's own console capture is off: dlx's console and train.log stay as they are.
"""

from __future__ import annotations

import json
import math
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlx.track.metrics import scalars

MODES = ("offline", "online", "disabled")


class WandbLogger:
    def __init__(
        self,
        run_dir: Path,
        project: str,
        config: Mapping[str, Any],
        *,
        mode: str = "offline",
        entity: str | None = None,
        batch_size: int | None = None,
        resume_step: int | None = None,
    ) -> None:
        import wandb

        from dlx.errors import UserError

        if mode not in MODES:
            raise UserError(
                f"logger.wandb.mode must be one of {', '.join(MODES)}, got {mode!r}",
                hint="logger.wandb.mode=offline (run files in the run dir; `wandb sync` later)",
            )
        self.run_dir, self.batch_size = Path(run_dir), batch_size
        link = self.run_dir / "wandb.json"
        saved = json.loads(link.read_text()) if link.is_file() else {}
        run_id = saved.get("id") or "".join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8)
        )  # W&B's id alphabet
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=self.run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(self.run_dir),
            mode=mode,
            config=dict(config),
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        self.last_step = int(saved.get("last_step", -1)) if resume_step is not None else -1
        link.write_text(json.dumps({"id": run_id, "project": project, "mode": mode}) + "\n")

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("step", 0))
        values = {k: v for k, v in scalars(record, self.batch_size) if math.isfinite(v)}
        if not values or step < self.last_step:  # W&B steps only go forward
            return
        self.run.log(values, step=step)
        self.last_step = step

    def close(self) -> None:
        import wandb

        summary_file = self.run_dir / "summary.json"
        status, exit_code = None, 0
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            status = summary.get("status")
            for section in ("val", "test"):
                for k, v in (summary.get(section) or {}).items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        self.run.summary[k] = v
            self.run.summary["status"] = status
            exit_code = 0 if status in ("finished", "preempted") else 1
        plots = sorted((self.run_dir / "plots").glob("*.png"))
        if plots:
            images = {f"plots/{p.stem}": wandb.Image(str(p)) for p in plots}
            self.run.log(images, step=max(self.last_step, 0))
        if status == "preempted":
            self.run.mark_preempting()
        link = self.run_dir / "wandb.json"
        saved = json.loads(link.read_text()) if link.is_file() else {}
        link.write_text(json.dumps({**saved, "last_step": self.last_step}) + "\n")
        self.run.finish(exit_code=exit_code)
        # The run file is written by W&B's service process; finish() returns before it has
        # flushed. teardown() waits for it, so the files are complete when dlx exits (and a
        # second run in the same Python process starts a fresh service).
        wandb.teardown()
