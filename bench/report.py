"""One way to show and keep benchmark figures: a plain table on stdout, JSON under bench/results/."""
import datetime
import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load_average():
    return [round(v, 2) for v in os.getloadavg()]


def machine():
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "load_avg": load_average()}


def table(rows, columns):
    """Print `rows` (dicts) as an aligned text table of `columns`."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def save(name, figures):
    """Write `figures` with the machine they were measured on; returns the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"benchmark": name, "measured": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": machine(), **figures}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwritten {path}")
    return path
