"""``python -m nlp_lstm task=<name> [mode=train|test|predict] [key=value ...]``, also under
``torchrun --nproc_per_node=N -m nlp_lstm ...``."""

import shutil
import sys

from nlp_lstm.cli import (
    check_overrides,
    check_task_arguments,
    name_checkpoint_task,
    prepare_processes,
    quick_predict,
    run,
    temporary_run_dir,
)
from nlp_lstm.config import conf_dir, register_schemas


def _hydra_main() -> None:
    import hydra  # imported here: a quick predict call never needs it

    hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")(run)()


def main() -> None:
    argv = sys.argv[1:]
    check_task_arguments(argv)
    if quick_predict(argv):  # a plain mode=predict: its config comes from the checkpoint
        return
    register_schemas()
    argv = name_checkpoint_task(argv)
    check_overrides(argv)
    scratch = temporary_run_dir(argv)
    if scratch:
        argv = [*argv, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]
    sys.argv = [sys.argv[0], *prepare_processes(argv)]
    try:
        _hydra_main()
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
