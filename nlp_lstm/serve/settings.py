"""The ``serve`` section: where to listen, which models, and what one request may ask for.
(Kept apart from the server so that composing the config never imports FastAPI.)"""

from __future__ import annotations

from dataclasses import dataclass

from nlp_lstm.config import check_fields
from nlp_lstm.errors import ConfigError


@dataclass
class ServeConfig:
    """The ``serve`` section: where to listen, which models, how to batch, and what one
    request may ask for."""

    host: str = "127.0.0.1"  # loopback only unless told otherwise (0.0.0.0: every interface)
    port: int = 8000
    models: dict | None = None  # name -> checkpoint ({ner: PATH, sst: PATH}); ckpt=PATH adds one
    workers: int = 1  # uvicorn processes, each with every model
    batching: bool = True  # gather concurrent requests to a model into one call
    max_wait_ms: float = 5.0  # how long a request waits for others to join it
    max_batch_size: int = 64  # inputs in one model call
    max_inputs: int = 256  # inputs in one request
    max_chars: int = 10_000  # characters in one input
    max_body_bytes: int = 1_000_000
    log_requests: bool = False  # uvicorn's access log

    def __post_init__(self) -> None:
        check_fields(self, at_least_one=("workers", "max_batch_size", "max_inputs", "max_chars",
                                         "max_body_bytes"))  # fmt: skip
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be 0 or more, got {self.max_wait_ms}")
        self.models = self.models or {}
        if not isinstance(self.models, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.models.items()
        ):
            raise ConfigError("models must map names to checkpoint paths: {ner: PATH, sst: PATH}")
