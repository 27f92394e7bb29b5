"""``python -m nlp_lstm task=<ner|sentiment|charlm|translate> [mode=...] [key=value ...]``."""

import hydra
from omegaconf import DictConfig

from nlp_lstm.cli import conf_dir, run


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
