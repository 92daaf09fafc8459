"""Buffer planning by liveness: values that are never alive at the same time share a buffer.

The compiler lowers each recurrent core to a straight list of instructions per time step;
every per-step value that nothing reads after the step (an LSTM's pre-activation, most
cotangents) lives in a scratch buffer. This pass decides which scratch values share one:
it is interval colouring, done greedily in order of first use (optimal for intervals).
"""

from __future__ import annotations


def share_buffers(lifetimes: dict, keys: dict, in_place=frozenset()) -> dict:
    """A buffer number for every value, such that two values share a number only if they
    have the same key (shape and dtype) and their lifetimes do not overlap.

    ``lifetimes[v] = (first, last)``: the instruction that writes ``v`` first and the last
    one that reads it. ``in_place`` holds pairs ``(dying, born)``: ``born`` may take the
    buffer of ``dying`` when ``dying`` is read for the last time by the instruction that
    writes ``born`` (an elementwise kernel that reads its input before writing its output).
    """
    order = sorted(lifetimes, key=lambda v: (lifetimes[v][0], lifetimes[v][1], str(v)))
    assigned: dict = {}
    holder: dict = {}  # buffer -> the value now in it
    count = 0
    for value in order:
        first, _ = lifetimes[value]
        choice = None
        for buffer, owner in holder.items():
            if keys[owner] != keys[value]:
                continue
            ends = lifetimes[owner][1]
            if ends < first or (ends == first and (owner, value) in in_place):
                choice = buffer
                break
        if choice is None:
            choice, count = count, count + 1
        holder[choice] = value
        assigned[value] = choice
    return assigned
