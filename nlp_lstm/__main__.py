"""``python -m nlp_lstm task=<name> [mode=train|test|predict] [key=value ...]``, also under
``torchrun --nproc_per_node=N -m nlp_lstm ...``."""

import sys

import hydra
from omegaconf import DictConfig

from nlp_lstm.cli import check_task_arguments, prepare_processes, run
from nlp_lstm.config import conf_dir, register_schemas


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    check_task_arguments(sys.argv[1:])
    register_schemas()
    sys.argv = [sys.argv[0], *prepare_processes(sys.argv[1:])]
    _hydra_main()


if __name__ == "__main__":
    main()
