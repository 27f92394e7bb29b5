"""Ship a trained model: TorchScript or ONNX graphs over plain id tensors, int8 on request.

``mode=export ckpt=PATH export.format=torchscript|onnx export.path=FILE`` writes FILE (the
graph: no nlp_lstm code is needed to run it) and FILE.json beside it (vocabularies, label
or tag sets and how to turn text into the graph's inputs). Each task builds its graph from
the shared blocks here; this module scripts, quantises and saves it.

The exported graphs take padded batches without packing: :class:`PaddedRNN` runs an
``nn.LSTM``/``nn.GRU`` over padding with the same results at real positions (the
backward direction reads each sequence reversed within its own length), which both
TorchScript and ONNX can express.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from nlp_lstm.config import check_fields, to_dataclass
from nlp_lstm.data.batching import MAX_WORD_CHARS, WordChars, pad
from nlp_lstm.data.vocab import Vocab
from nlp_lstm.errors import ConfigError, UserError
from nlp_lstm.files import atomic_write, atomic_write_text
from nlp_lstm.modules.embeddings import CharCNN, CharLSTM, TokenEmbedder

log = logging.getLogger(__name__)

ExportFormat = Literal["torchscript", "onnx"]


@dataclass
class ExportConfig:
    """The ``export`` section: what ``mode=export`` writes."""

    format: ExportFormat = "torchscript"
    path: str | None = None  # the graph; its metadata goes to <path>.json
    quantize: Literal["none", "dynamic"] = "none"  # dynamic: int8 LSTM and Linear weights
    opset: int = 17  # ONNX opset

    def __post_init__(self) -> None:
        check_fields(self)


# ---------------------------------------------------------------------------- blocks


def reversal_index(lengths: Tensor, steps: int) -> Tensor:
    """``(B, T)`` positions that reverse each sequence within its length and leave padding
    in place: ``t -> length - 1 - t`` for ``t < length``. The map is its own inverse."""
    positions = torch.arange(steps, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def _time_gather(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(1, index.unsqueeze(2).expand(-1, -1, values.shape[2]))


class _PaddedLayer(nn.Module):
    """One layer of :class:`PaddedRNN`: a forward RNN and, if bidirectional, a backward
    RNN that reads each sequence reversed within its length."""

    def __init__(self, forward_rnn: nn.Module, backward_rnn: nn.Module | None) -> None:
        super().__init__()
        self.forward_rnn = forward_rnn
        self.backward_rnn = backward_rnn

    def forward(self, inputs: Tensor, reverse: Tensor) -> tuple[Tensor, Tensor]:
        """Forward states, and backward states in reading order (the inputs if one-way)."""
        forward_states, _ = self.forward_rnn(inputs)
        backward_states = inputs
        if self.backward_rnn is not None:
            reversed_states, _ = self.backward_rnn(_time_gather(inputs, reverse))
            backward_states = _time_gather(reversed_states, reverse)
        return forward_states, backward_states


def _single_layer_copy(rnn: nn.LSTM | nn.GRU, layer: int, suffix: str) -> nn.Module:
    """A one-layer, one-way RNN of the same kind holding layer ``layer``'s weights of
    one direction (``suffix`` "" or "_reverse")."""
    single = type(rnn)(
        getattr(rnn, f"weight_ih_l{layer}").shape[1],
        rnn.hidden_size,
        batch_first=True,
        bias=rnn.bias,
    )
    names = (
        ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if rnn.bias else ("weight_ih", "weight_hh")
    )
    for name in names:
        getattr(single, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{layer}{suffix}").data)
    return single


class PaddedRNN(nn.Module):
    """An ``nn.LSTM``/``nn.GRU`` (``batch_first``, any layers, one or two directions) for
    padded batches without packing, holding the same weights.

    ``forward(inputs (B, T, D), lengths (B,)) -> (states (B, T, H * dirs), final (B, H * dirs))``:
    states are zero at padding and equal the packed RNN's at real positions; ``final`` is
    the last layer's final hidden state of each direction, as ``h_n`` holds it.
    """

    def __init__(self, rnn: nn.LSTM | nn.GRU) -> None:
        super().__init__()
        if not rnn.batch_first:
            raise ValueError("PaddedRNN expects a batch_first RNN")
        self.bidirectional = rnn.bidirectional
        self.layers = nn.ModuleList(
            _PaddedLayer(
                _single_layer_copy(rnn, layer, ""),
                _single_layer_copy(rnn, layer, "_reverse") if rnn.bidirectional else None,
            )
            for layer in range(rnn.num_layers)
        )

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        steps = inputs.shape[1]
        mask = torch.arange(steps, device=inputs.device).unsqueeze(0) < lengths.unsqueeze(1)
        mask = mask.unsqueeze(2).to(inputs.dtype)
        reverse = reversal_index(lengths, steps)
        states, forward_states, backward_states = inputs, inputs, inputs
        for layer in self.layers:
            forward_states, backward_states = layer(states, reverse)
            if self.bidirectional:
                states = torch.cat([forward_states, backward_states], dim=2) * mask
            else:
                states = forward_states * mask
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, forward_states.shape[2])
        final = forward_states.gather(1, last).squeeze(1)
        if self.bidirectional:
            final = torch.cat([final, backward_states[:, 0]], dim=1)
        return states, final


class _SteppedLSTM(nn.Module):
    """A one-layer, one-way LSTM run a step at a time, each sequence's ``(h, c)`` frozen
    once it ends: ``forward(inputs (B, T, D), lengths (B,)) -> (outputs (B, T, H), h, c)``
    with the exact final ``h``, ``c`` ``(B, H)``."""

    def __init__(self, rnn: nn.LSTM) -> None:
        super().__init__()
        self.rnn = rnn
        self.hidden = rnn.hidden_size

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, steps = inputs.shape[0], inputs.shape[1]
        h = inputs.new_zeros(1, batch, self.hidden)
        c = inputs.new_zeros(1, batch, self.hidden)
        outputs: list[Tensor] = []
        for t in range(steps):
            out, (h_next, c_next) = self.rnn(inputs[:, t : t + 1], (h, c))
            going = (t < lengths).view(1, -1, 1)
            h = torch.where(going, h_next, h)
            c = torch.where(going, c_next, c)
            outputs.append(out[:, 0])
        return torch.stack(outputs, 1), h[0], c[0]


class _SteppedLayer(nn.Module):
    def __init__(self, forward_rnn: _SteppedLSTM, backward_rnn: _SteppedLSTM | None) -> None:
        super().__init__()
        self.forward_rnn = forward_rnn
        self.backward_rnn = backward_rnn


class StepwiseBiLSTM(nn.Module):
    """A (bi-directional, stacked) ``nn.LSTM`` for export when its final ``(h, c)`` is
    needed too (an encoder that starts a decoder): a step at a time, so the cell state
    at each sequence's own end is exact. ``forward(inputs (B, T, D), lengths (B,)) ->
    (states (B, T, H * dirs), h_n, c_n)``, with ``h_n``/``c_n`` laid out as ``nn.LSTM``
    returns them: ``(layers * dirs, B, H)``."""

    def __init__(self, rnn: nn.LSTM) -> None:
        super().__init__()
        if not isinstance(rnn, nn.LSTM) or not rnn.batch_first:
            raise ValueError("StepwiseBiLSTM expects a batch_first nn.LSTM")
        self.layers = nn.ModuleList(
            _SteppedLayer(
                _SteppedLSTM(_single_layer_copy(rnn, layer, "")),
                _SteppedLSTM(_single_layer_copy(rnn, layer, "_reverse"))
                if rnn.bidirectional
                else None,
            )
            for layer in range(rnn.num_layers)
        )

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        steps = inputs.shape[1]
        mask = torch.arange(steps, device=inputs.device).unsqueeze(0) < lengths.unsqueeze(1)
        mask = mask.unsqueeze(2).to(inputs.dtype)
        reverse = reversal_index(lengths, steps)
        states = inputs
        finals_h: list[Tensor] = []
        finals_c: list[Tensor] = []
        for layer in self.layers:
            forward_states, h, c = layer.forward_rnn(states, lengths)
            finals_h.append(h)
            finals_c.append(c)
            backward_rnn = layer.backward_rnn
            if backward_rnn is not None:
                reversed_states, h, c = backward_rnn(_time_gather(states, reverse), lengths)
                finals_h.append(h)
                finals_c.append(c)
                backward_states = _time_gather(reversed_states, reverse)
                states = torch.cat([forward_states, backward_states], dim=2) * mask
            else:
                states = forward_states * mask
        return states, torch.stack(finals_h, 0), torch.stack(finals_c, 0)


# ---------------------------------------------------------------------------- writing


class EmbedderGraph(nn.Module):
    """A :class:`TokenEmbedder` (in eval mode) over plain tensors: ``words (B, T)`` and,
    for an embedder with char features, ``chars (B, T, L)`` (each token's char ids,
    0-padded; see :func:`graph_inputs`) -> ``(B, T, D)``."""

    def __init__(self, embedder: TokenEmbedder) -> None:
        super().__init__()
        self.words = embedder.words
        self.static = embedder.static
        self.has_chars = embedder.chars is not None
        self.char_cnn = embedder.chars if isinstance(embedder.chars, CharCNN) else None
        char_lstm = embedder.chars if isinstance(embedder.chars, CharLSTM) else None
        self.char_embedding = char_lstm.embedding if char_lstm is not None else None
        self.char_rnn = PaddedRNN(char_lstm.lstm) if char_lstm is not None else None

    def forward(self, words: Tensor, chars: Tensor | None) -> Tensor:
        parts = [self.words(words)]
        if self.static is not None:
            parts.append(self.static(words))
        if self.has_chars:
            if chars is None:
                raise ValueError("this model reads char features: pass chars (B, T, L)")
            batch, steps = words.shape
            flat = chars.reshape(batch * steps, chars.shape[2])
            if self.char_cnn is not None:
                parts.append(self.char_cnn(flat).reshape(batch, steps, -1))
            if self.char_rnn is not None and self.char_embedding is not None:
                char_lengths = (flat != 0).sum(1).clamp_min(1)
                _, final = self.char_rnn(self.char_embedding(flat), char_lengths)
                parts.append(final.reshape(batch, steps, -1))
        return torch.cat(parts, dim=2)


def graph_inputs(
    sentences: list[list[str]], words: Vocab, chars: Vocab | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """What an exported graph reads for tokenised sentences (and what its JSON describes):
    word ids ``(B, T)``, each token's char ids ``(B, T, L)`` (at most MAX_WORD_CHARS;
    None without a char vocabulary) and lengths ``(B,)``."""
    lengths = torch.tensor([len(s) for s in sentences])
    width = int(lengths.max())
    char_ids = None
    if chars is not None:
        encode = WordChars(chars).ids  # the same char ids as in training
        char_width = max(min(len(t), MAX_WORD_CHARS) for s in sentences for t in s)
        char_ids = torch.zeros(len(sentences), width, char_width, dtype=torch.long)
        for row, sentence in enumerate(sentences):
            for col, token in enumerate(sentence):
                ids = encode(token)
                char_ids[row, col, : len(ids)] = torch.tensor(ids)
    return pad([words.encode(s) for s in sentences], length=width), char_ids, lengths


def export_config(cfg) -> ExportConfig:
    """The typed ``export`` section, with its path required."""
    config = to_dataclass(ExportConfig, cfg.get("export", {}), "export")
    if not config.path:
        raise ConfigError("mode=export needs export.path=FILE (the graph to write)")
    if Path(config.path).expanduser().is_dir():
        raise ConfigError(f"export.path={config.path} is a directory; name a file")
    return config


def quantize_dynamic(module: nn.Module) -> nn.Module:
    """int8 dynamic quantisation of every LSTM, GRU and Linear layer (weights int8,
    activations quantised on the fly): PyTorch's supported CPU path for RNNs."""
    from torch.ao.quantization import quantize_dynamic as quantize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        return quantize(module, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)


def export_graph(
    graph: nn.Module,
    example: tuple[Tensor, ...],
    inputs: dict[str, dict[int, str]],
    outputs: dict[str, dict[int, str]],
    metadata: dict[str, Any],
    config: ExportConfig,
) -> Path:
    """Script ``graph`` (quantised first when asked), write it as TorchScript or ONNX and
    its metadata JSON beside it; both files appear whole or not at all. ``inputs`` and
    ``outputs`` name the graph's tensors, each with its variable axes (``{0: "batch"}``)."""
    path = Path(config.path).expanduser()
    graph = graph.eval()
    if config.quantize == "dynamic" and config.format == "torchscript":
        graph = quantize_dynamic(graph)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        scripted = torch.jit.script(graph)
    names = list(inputs)
    if config.format == "torchscript":
        data = _torchscript_bytes(scripted)
    elif config.format == "onnx":
        data = _onnx_bytes(scripted, example, inputs, outputs, config)
        names = _onnx_input_names(data)  # inputs the graph never reads are left out
    else:
        raise ConfigError(f"export.format must be torchscript or onnx, not {config.format!r}")
    metadata = {
        "format": config.format,
        "quantize": config.quantize,
        "inputs": names,
        "outputs": list(outputs),
        **metadata,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(data))
    atomic_write_text(metadata_path(path), json.dumps(metadata, ensure_ascii=False) + "\n")
    log.info("wrote %s (%s%s, %.1f MB) and %s", path, config.format,
             ", int8 dynamic" if config.quantize == "dynamic" else "", len(data) / 2**20,
             metadata_path(path))  # fmt: skip
    return path


def metadata_path(path: str | Path) -> Path:
    """Where an exported graph's metadata lives: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _torchscript_bytes(scripted: torch.jit.ScriptModule) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def _onnx_bytes(
    scripted: torch.jit.ScriptModule,
    example: tuple[Tensor, ...],
    inputs: dict[str, dict[int, str]],
    outputs: dict[str, dict[int, str]],
    config: ExportConfig,
) -> bytes:
    """ONNX through the TorchScript-based exporter: it keeps the scripted time loops
    (Viterbi, the RNNs) as ONNX loops, so one file serves every batch size and length."""
    import io

    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("export.format=onnx needs the onnx package: pip install onnx") from None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            scripted,
            example,
            buffer,
            dynamo=False,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes={**inputs, **outputs},
            opset_version=config.opset,
        )
    data = buffer.getvalue()
    if config.quantize == "dynamic":
        data = _onnx_quantized(data)
    return data


def _onnx_input_names(data: bytes) -> list[str]:
    import onnx

    return [value.name for value in onnx.load_model_from_string(data).graph.input]


def _onnx_quantized(data: bytes) -> bytes:
    """int8 dynamic quantisation of an ONNX graph's LSTM, GRU, MatMul and embedding weights
    with ONNX Runtime's own quantiser."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as quantize

    model = onnx.load_model_from_string(data)
    _constants_to_initializers(model)
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "model.onnx", Path(folder) / "model.int8.onnx"
        onnx.save(model, str(source))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize(str(source), str(target), weight_type=QuantType.QInt8)
        return target.read_bytes()


def _constants_to_initializers(model, min_size: int = 256) -> None:
    """The TorchScript-based exporter writes scripted RNN weights as Constant nodes; ONNX
    Runtime's quantiser only sees initializers, so move every large constant there."""
    import onnx

    kept = []
    for node in model.graph.node:
        value = node.attribute[0] if node.op_type == "Constant" and node.attribute else None
        if value is not None and value.name == "value" and _size(value.t) >= min_size:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _size(tensor) -> int:
    size = 1
    for dim in tensor.dims:
        size *= dim
    return size
