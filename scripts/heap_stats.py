"""Run an nlp_lstm command and print glibc's heap statistics (``mallinfo2``) at each epoch's
log line: memory in use, free memory inside the heap and its number of pieces, mmapped
blocks. Growing free memory with steady use is fragmentation; growing use is live memory.

    NLP_LSTM_DATA=../shared/data python scripts/heap_stats.py task=ner trainer.max_epochs=6 \
        trainer.num_threads=1 data.pad_multiple=1

Linux with glibc 2.33+ only.
"""

from __future__ import annotations

import ctypes
import runpy
import sys

import nlp_lstm.train.runlog as runlog


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def main() -> None:
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        sys.exit("heap_stats: this C library has no mallinfo2 (glibc 2.33+ needed)")
    libc.mallinfo2.restype = MallInfo2
    resident = runlog.current_rss_mib  # called once per epoch, for the log line

    def resident_with_heap_stats() -> int:
        info, mib = libc.mallinfo2(), 2**20
        print(
            f"heap {info.arena / mib:.0f} MiB: in use {info.uordblks / mib:.0f}, free "
            f"{info.fordblks / mib:.0f} in {info.ordblks} pieces; mmapped "
            f"{info.hblkhd / mib:.0f} MiB in {info.hblks} blocks",
            file=sys.stderr,
            flush=True,
        )
        return resident()

    runlog.current_rss_mib = resident_with_heap_stats
    sys.argv = ["nlp_lstm", *sys.argv[1:]]
    runpy.run_module("nlp_lstm", run_name="__main__")


if __name__ == "__main__":
    main()
