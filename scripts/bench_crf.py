"""Benchmark the CRF: ours against pytorch-crf and against a bare BiLSTM step.

For batch 32 and 256, sentences of 20-40 tokens (padded to 40), 9 tags:
  * a BiLSTM tagger train step (embedding 50, vocab 400k, hidden 256 per direction, packed
    sequences, forward + backward + Adam): bare (token softmax), + our CRF, + pytorch-crf;
  * the CRF loss alone (forward + backward on given emissions): ours vs pytorch-crf;
  * Viterbi decode alone, lists of tag ids as pytorch-crf returns them: ours vs pytorch-crf
    (and our tensor-returning ``viterbi``).
Medians over warm repeats, CUDA-synchronised. Both CRFs are checked to agree (loss and
paths) on the inputs timed. Prints a table; ``--json FILE`` writes the results.

    python scripts/bench_crf.py [--device cpu|cuda] [--json bench_crf.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import torchcrf
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlp_lstm import CRF
from nlp_lstm.train.runlog import peak_rss_mib


def timed(fn, device: torch.device, repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


class Tagger(nn.Module):
    def __init__(self, vocab: int, tags: int, crf: str | None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 50)
        self.lstm = nn.LSTM(50, 256, batch_first=True, bidirectional=True)
        self.projection = nn.Linear(512, tags)
        self.crf = {
            "ours": lambda: CRF(tags, batch_first=True),
            "pytorch-crf": lambda: torchcrf.CRF(tags, batch_first=True),
        }.get(crf, lambda: None)()

    def loss(self, words, lengths_cpu, tags, mask):
        packed = pack_padded_sequence(
            self.embedding(words), lengths_cpu, batch_first=True, enforce_sorted=False
        )
        states, _ = pad_packed_sequence(
            self.lstm(packed)[0], batch_first=True, total_length=words.shape[1]
        )
        emissions = self.projection(states)
        if self.crf is None:
            return (
                F.cross_entropy(emissions.transpose(1, 2), tags, reduction="none") * mask
            ).sum() / mask.shape[0]
        return -self.crf(emissions, tags, mask, reduction="mean")


def make_inputs(batch: int, steps: int, tags: int, vocab: int, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(20, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    mask = torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)
    words = torch.randint(1, vocab, (batch, steps), generator=gen) * mask
    tag_ids = torch.randint(tags, (batch, steps), generator=gen) * mask
    emissions = torch.randn(batch, steps, tags, generator=gen)
    return [x.to(device) for x in (words, tag_ids, mask, emissions)] + [lengths]


def bench_batch(
    batch: int, device: torch.device, repeats: int, vocab: int, steps: int = 40, tags: int = 9
) -> dict:
    words, tag_ids, mask, emissions, lengths = make_inputs(
        batch, steps, tags, vocab, device, seed=batch
    )
    row: dict = {"batch": batch, "length": steps, "tags": tags}

    # the CRF alone, on the same parameters
    ours = CRF(tags, batch_first=True).to(device)
    reference = torchcrf.CRF(tags, batch_first=True).to(device)
    ours.load_state_dict(reference.state_dict())
    e_ours = emissions.clone().requires_grad_()
    e_ref = emissions.clone().requires_grad_()
    llh_ours, llh_ref = ours(e_ours, tag_ids, mask), reference(e_ref, tag_ids, mask)
    torch.testing.assert_close(llh_ours, llh_ref, rtol=1e-5, atol=1e-3)
    llh_ours.backward()
    llh_ref.backward()
    torch.testing.assert_close(e_ours.grad, e_ref.grad, rtol=1e-4, atol=1e-5)
    assert ours.decode(emissions, mask) == reference.decode(emissions, mask), "decoded paths differ"

    row["crf_loss_ours_ms"] = timed(lambda: ours(e_ours, tag_ids, mask).backward(), device, repeats)
    row["crf_loss_pytorch_crf_ms"] = timed(
        lambda: reference(e_ref, tag_ids, mask).backward(), device, repeats
    )
    with torch.no_grad():
        row["decode_ours_ms"] = timed(lambda: ours.decode(emissions, mask), device, repeats)
        row["viterbi_tensor_ours_ms"] = timed(
            lambda: ours.viterbi(emissions, mask), device, repeats
        )
        row["decode_pytorch_crf_ms"] = timed(
            lambda: reference.decode(emissions, mask), device, repeats
        )

    # a whole train step of a BiLSTM tagger
    for key, crf in (("bare_ms", None), ("ours_ms", "ours"), ("pytorch_crf_ms", "pytorch-crf")):
        torch.manual_seed(0)
        model = Tagger(vocab, tags, crf).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer):
            optimizer.zero_grad(set_to_none=True)
            model.loss(words, lengths, tag_ids, mask).backward()
            optimizer.step()

        row[key] = timed(step, device, max(repeats // 4, 5))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=400_000)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    results = []
    for batch in args.batches:
        row = bench_batch(batch, device, args.repeats, args.vocab)
        results.append({**row, "peak_rss_mib": peak_rss_mib()})  # so far, this batch included

    print(
        f"device: {name}   torch {torch.__version__}   length 40 (ragged 20-40), 9 tags, medians in ms"
    )
    header = f"{'batch':>5} | {'bare step':>9} {'+ours':>8} {'+ptcrf':>8} {'ours/bare':>9} {'pt/ours':>7} | {'loss ours':>9} {'loss pt':>8} {'speedup':>7} | {'dec ours':>8} {'dec pt':>8} {'speedup':>7} {'viterbi':>8} | {'peak MiB':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['batch']:>5} | {r['bare_ms']:9.2f} {r['ours_ms']:8.2f} {r['pytorch_crf_ms']:8.2f} {r['ours_ms'] / r['bare_ms']:8.2f}x {r['pytorch_crf_ms'] / r['ours_ms']:6.2f}x"
            f" | {r['crf_loss_ours_ms']:9.2f} {r['crf_loss_pytorch_crf_ms']:8.2f} {r['crf_loss_pytorch_crf_ms'] / r['crf_loss_ours_ms']:6.2f}x"
            f" | {r['decode_ours_ms']:8.2f} {r['decode_pytorch_crf_ms']:8.2f} {r['decode_pytorch_crf_ms'] / r['decode_ours_ms']:6.2f}x {r['viterbi_tensor_ours_ms']:8.2f}"
            f" | {r['peak_rss_mib']:8d}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"device": name, "torch": torch.__version__, "results": results}, handle, indent=2
            )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
