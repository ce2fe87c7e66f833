"""``OUT/manifest.json``: what a study is, and how far it got, search by search.

Written atomically after every change, so a study killed at any point leaves a manifest
that says which searches finished (skipped on the next run), which one was running
(resumed with the search's own ``--resume``, or cleaned and restarted when Tune had saved
nothing yet), and which never started. The settings that define the study are kept too: a
re-run with other settings is refused rather than mixed into the same folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miles_tune.errors import ConfigError

FILE = "manifest.json"
PLANNED, RUNNING, DONE, REFUSED, SKIPPED = "planned", "running", "done", "refused", "skipped"


@dataclass
class Manifest:
    path: Path
    study: str
    settings: dict[str, Any]
    searches: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)  # the epoch measured for the estimate
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, out: Path, study: str, settings: dict[str, Any]) -> Manifest:
        """The folder's manifest, or a new one; refuses a folder that holds another study."""
        path = out / FILE
        if not path.exists():
            return cls(path, study, dict(settings))
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path}: cannot read it ({exc}); move it away to start this study afresh"
            ) from None
        if raw.get("study") != study:
            raise ConfigError(
                f"--out {out} holds the study {raw.get('study')!r}, not {study!r}; use another --out"
            )
        old = raw.get("settings", {})
        changed = [k for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k)]
        if changed:
            k = changed[0]
            raise ConfigError(
                f"--out {out}: this study ran with {k}={json.dumps(old.get(k))}, not "
                f"{json.dumps(settings.get(k))}; re-run it with its own arguments, or use another --out"
            )
        return cls(path, study, old, raw.get("searches", {}), raw.get("measured", {}), raw.get("report", {}))

    def status(self, name: str) -> str:
        return self.searches.get(name, {}).get("status", PLANNED)

    def update(self, name: str, **values: Any) -> None:
        self.searches.setdefault(name, {}).update(values)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "study": self.study,
            "settings": self.settings,
            "measured": self.measured,
            "searches": self.searches,
            "report": self.report,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)
