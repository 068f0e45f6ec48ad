"""Entry-point glue: user errors become one line and exit code 2, on rank 0 only."""
from __future__ import annotations

import logging
import os
import socket
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


def setup_logging(rank: int, log_dir: str | os.PathLike | None = None) -> None:
    """Rank 0 logs INFO to the console, other ranks only warnings; with ``log_dir`` every rank also
    writes everything it logs to ``log_dir/rank<r>.log`` (host name included)."""
    # torch.distributed deprecation chatter from inside DeepSpeed, once per collective kind per rank
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    fmt = logging.Formatter(f"%(asctime)s [rank{rank}] %(levelname)s %(message)s", "%H:%M:%S")
    root = logging.getLogger()  # other libraries: warnings and errors only
    if not any(getattr(h, "_deepprompt", False) for h in root.handlers):
        other = logging.StreamHandler()
        other.setFormatter(fmt)
        other.addFilter(lambda record: not record.name.startswith("deepprompt"))  # ours print below
        other._deepprompt = True
        root.addHandler(other)
        root.setLevel(logging.WARNING)
    ours = logging.getLogger("deepprompt")
    ours.setLevel(logging.INFO)
    if not any(getattr(h, "_deepprompt", False) for h in ours.handlers):
        console = logging.StreamHandler()
        console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        console.setFormatter(fmt)
        console._deepprompt = True
        ours.addHandler(console)
    if log_dir is not None:
        os.makedirs(log_dir, exist_ok=True)
        path = os.path.abspath(os.path.join(log_dir, f"rank{rank}.log"))
        if not any(getattr(h, "baseFilename", None) == path for h in ours.handlers):
            fh = logging.FileHandler(path)
            fh.setFormatter(logging.Formatter(
                f"%(asctime)s [rank{rank}@{socket.gethostname()}] %(levelname)s %(message)s"))
            ours.addHandler(fh)
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
