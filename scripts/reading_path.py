"""How much code a newcomer reads to follow ``python -m nlp_lstm task=ner`` from
``__main__`` to the first loss: the nlp_lstm files whose functions run before the
first ``backward()`` (module and class bodies, run on import,
do not count), their lines, and the lines that actually run.

    python scripts/reading_path.py [--json FILE] [extra overrides ...]

Runs the default NER recipe on a 200-sentence slice of the CoNLL-2003 training file
(``NLP_LSTM_DATA``), tracing only frames of the nlp_lstm package; stops at the first
backward pass.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PACKAGE = str(REPO / "nlp_lstm")


class FirstLoss(Exception):
    """Raised by the first backward pass: the trace ends there."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    data = Path(os.environ.get("NLP_LSTM_DATA", REPO.parent / "shared" / "data")) / "conll2003"
    blocks = (data / "train.txt").read_text().split("\n\n")[:201]
    folder = Path(tempfile.mkdtemp(prefix="reading_path_"))
    (folder / "train.txt").write_text("\n\n".join(blocks) + "\n")
    ran: dict[str, set[int]] = {}
    edges: set[tuple[str, str]] = set()  # file -> file calls: the reader's back and forth

    def local(frame, event, arg):
        if event == "line":
            ran[frame.f_code.co_filename].add(frame.f_lineno)
        return local

    def trace(frame, event, arg):
        name = frame.f_code.co_filename
        if not name.startswith(PACKAGE) or not frame.f_code.co_flags & inspect.CO_NEWLOCALS:
            return None  # other packages, and module and class bodies (run on import)
        ran.setdefault(name, set()).add(frame.f_code.co_firstlineno)
        caller = frame.f_back.f_code.co_filename if frame.f_back else ""
        if caller.startswith(PACKAGE) and caller != name:
            edges.add((caller, name))
        return local

    def stop(*_args, **_kwargs):
        raise FirstLoss

    torch.Tensor.backward = stop
    sys.argv = ["nlp_lstm", "task=ner", f"data.train={folder / 'train.txt'}",
                f"data.dev={folder / 'train.txt'}", "data.test=null",
                f"hydra.run.dir={folder / 'run'}", "trainer.progress_bar=false", *args.overrides]  # fmt: skip
    sys.path.insert(0, str(REPO))  # this checkout's package, whatever is installed
    from nlp_lstm.__main__ import main as nlp_lstm_main

    sys.settrace(trace)
    try:
        nlp_lstm_main()
    except FirstLoss:
        pass
    finally:
        sys.settrace(None)
    files = sorted(ran)
    total = sum(len(Path(f).read_text().splitlines()) for f in files)
    executed = sum(len(lines) for lines in ran.values())
    result = {"files": len(files), "lines_in_files": total, "lines_run": executed,
              "file_to_file_calls": len(edges),
              "file_list": [str(Path(f).relative_to(REPO)) for f in files]}  # fmt: skip
    for f in result["file_list"]:
        print(f"  {f}")
    print(
        f"{result['files']} files, {total} lines in them, {executed} distinct lines run, "
        f"{len(edges)} distinct file-to-file calls"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
