"""Trains a model as ``seqgraph run`` does, alone or as one rank under mpiexec, and saves the
loss of every step and the final parameters for test_distributed.py to compare (rank 0 to
RESULT, rank r > 0 its parameters to RESULT.rank<r>.npz).

    python mpi_worker.py RESULT.npz MODEL.sg OUT_DIR [SETTING | size:NAME=N | resume
                         | interrupt:STEP | fail:STEP | rank1:SETTING] ...

``interrupt:STEP`` sends rank 0 a SIGINT (Ctrl-C) during that step; ``fail:STEP`` makes rank 1
alone raise an error there; ``rank1:SETTING`` applies on rank 1 only. Each rank writes its process id to OUT_DIR/rank<R>.pid.
"""

import os
import signal
import sys
from pathlib import Path

import numpy as np

from seqgraph.errors import SeqgraphError
from seqgraph.train import distributed, loop
from seqgraph.train.run import run

RANK = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))


def main(result, model, out, *options):
    settings, sizes, events = [], {}, {}
    for option in options:
        kind, _, value = option.partition(":")
        if kind == "size":
            name, number = value.split("=")
            sizes[name] = int(number)
        elif kind in ("interrupt", "fail"):
            events[int(value)] = kind
        elif kind == "rank1":
            settings += [value] if RANK == 1 else []
        elif option != "resume":
            settings.append(option)
    losses = []
    update = loop.Trainer._update

    def recording_update(self, loss, grads, *rest):
        event = events.get(len(losses))
        if event == "interrupt" and RANK == 0:
            os.kill(os.getpid(), signal.SIGINT)
        if event == "fail" and RANK == 1:
            raise SeqgraphError("a failure on rank 1 alone")
        losses.append(loss)
        return update(self, loss, grads, *rest)

    loop.Trainer._update = recording_update
    distributed.AGREE_SECONDS = 1.0
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, f"rank{RANK}.pid").write_text(str(os.getpid()))
    try:
        trainer = run(model, out=out, dtype="float64", settings=settings, sizes=sizes, progress=False,
                      resume=out if "resume" in options else None)
    except loop.Interrupted:
        trainer, code = None, 130
    except SeqgraphError as error:  # as the command line reports it
        print(error.render(), file=sys.stderr)
        return 1
    else:
        code = 0
    params = {f"param/{k}": v for k, v in (trainer.net.params if trainer else {}).items()}
    np.savez(result if RANK == 0 else f"{result}.rank{RANK}.npz", losses=np.array(losses), **params)
    return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
