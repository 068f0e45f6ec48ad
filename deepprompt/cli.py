"""Entry-point glue: user errors become one line and exit code 2, on rank 0 only."""
from __future__ import annotations

import logging
import os
import sys
import warnings

from deepprompt.errors import DeepPromptError

EXIT_USER_ERROR = 2


def run_user_errors(main) -> None:
    try:
        main()
    except DeepPromptError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"deepprompt: error: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


def setup_logging(rank: int) -> None:
    # torch.distributed deprecation chatter from inside DeepSpeed, once per collective kind per rank
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("DeepSpeed", "transformers", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from deepspeed.utils import logger as ds_logger
        ds_logger.setLevel(logging.WARNING)
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
