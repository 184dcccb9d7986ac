#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpus of fuzz_uapi (tests/fuzz/corpus/): short programs
in the harness's encoding (see the decoder in fuzz_uapi.c) that reach deep
states at once: spaces created, sequences admitted, released, compacted,
budgets changed, faults armed. Run from the repository root."""
import os

OP_OPEN, OP_CLOSE, OP_IOCTL, OP_RAW, OP_FAULT_RT, OP_FAULT_ADMIT = 0, 2, 3, 28, 30, 31
OP_KERNEL = 32
APPEND, TRIM, EVICT, SHRINK = 1, 2, 3, 4


def le16(v):
    return bytes([v & 255, v >> 8])


def ioctl(which, body, fd=0, space=0):
    # op, pick_fd, pick_space, which, fields..., mutate_cmd, arg placement
    return bytes([OP_IOCTL, fd, space, which]) + body + bytes([0, 0])


def create(layers=2, heads=2, dim=1, tiers=2, t0=2, t1=3, seqs=8,
           tokens=256, va=8, budget=8, **kw):
    b = bytes([0, 0, layers - 1, 0, heads - 1, 0, dim, 0, tiers - 1, 0, t0])
    if tiers == 2:
        b += bytes([t1])
    b += bytes([seqs - 1, 0]) + le16(tokens - 1) + bytes([0, va - 1,
                                                          budget - 1, 0, 0])
    return ioctl(1, b, **kw)


def admit(tokens, **kw):
    b = bytes([len(tokens), 0, 0])
    for t in tokens:
        b += bytes([0]) + le16(t) + bytes([0, 0])
    return ioctl(3, b + bytes([0]), **kw)


def release(slots, **kw):
    return ioctl(4, bytes([len(slots), 0, 0]) + bytes(slots) + bytes([0]),
                 **kw)


def budget(mb2, **kw):
    return ioctl(5, bytes([mb2 - 1, 0]), **kw)


def compact(b=0, **kw):
    return ioctl(6, bytes([b, 0, 0]), **kw)


def stats(**kw):
    return ioctl(7, bytes([0, 0, 0]), **kw)


def pti(**kw):
    return ioctl(8, bytes([0]), **kw)


def destroy(**kw):
    return ioctl(2, bytes([0]), **kw)


def space_map(**kw):
    return ioctl(9, bytes([0, 0]), **kw)


def step(ops, **kw):
    """ops: [(op, [slots], [(arg0, arg1)] or None, sinks)]"""
    b = bytes([len(ops), 0])
    for op, slots, args, sinks in ops:
        # op, count, its hostile byte, slots pointer, sinks, flags, reserved
        b += bytes([op - 1, len(slots), 0, 0, sinks, 0, 0])
        for i, s in enumerate(slots):
            b += bytes([s])
            if op == EVICT:
                a0, a1 = args[i]
                b += bytes([a0, 0]) + le16(a1)
            else:
                b += bytes([0])
            b += bytes([0])
    return ioctl(10, b + bytes([0]), **kw)


def fence(wait=False, seqno=0, **kw):
    b = bytes([128 + seqno if seqno else 0, 128 if wait else 0, 0])
    return ioctl(11, b, **kw)


def seq_stats(slots, **kw):
    b = bytes([len(slots), 0, 0]) + bytes(slots) + bytes([0])
    return ioctl(12, b, **kw)


def kernel(slot, space=0, lists=4, fill=255):
    # every list raised by fill (mod its room), both tiers
    return bytes([OP_KERNEL, space, slot]) + bytes([255, fill, 0, fill, 0]
                                                   * lists)


def fault_rt(space=0, nth=1):
    return bytes([OP_FAULT_RT, space, nth - 1, 0])


def fault_admit(space=0, nth=1):
    return bytes([OP_FAULT_ADMIT, space, nth - 1, 0])


O = bytes([OP_OPEN])
seeds = {
    "lifecycle": O + create() + admit([10, 100, 250]) + stats() + pti()
    + release([1]) + compact() + budget(8) + admit([200] * 6)
    + release([0, 2]) + compact(100) + compact() + destroy(),
    "big": O + create(layers=4, heads=4, seqs=4, tokens=512, va=8, budget=2)
    + admit([500]) + admit([500]) + budget(8) + admit([500] * 2)
    + release([1, 3]) + compact(0) + stats() + budget(2),
    "faults": O + create(layers=4, heads=4, seqs=4, tokens=512, va=8,
                         budget=8)
    + admit([500] * 4) + release([0, 2]) + fault_rt(0, 1) + compact()
    + fault_rt(0, 2) + compact() + fault_rt(0, 3) + compact()
    + fault_admit(0, 1) + admit([500, 500]) + fault_rt(0, 1)
    + admit([500]) + compact() + stats(),
    "two_fds": O + O + create(fd=0) + create(fd=1) + admit([50], fd=0)
    + admit([60], fd=1) + release([0], fd=1, space=1) + stats(fd=1)
    + bytes([OP_CLOSE, 0, 0]) + stats(fd=0),
    "step": O + create(dim=3) + admit([100, 40, 7]) + space_map()
    + kernel(0) + kernel(1) + kernel(2)
    + step([(TRIM, [0, 1, 2], None, 0)]) + fence()
    + b"".join(step([(APPEND, [0, 1, 2], None, 0)]) + kernel(0) + kernel(1)
               + kernel(2) for _ in range(12))
    + step([(EVICT, [0, 1, 2], [(4, 90), (2, 30), (1, 5)], 2)])
    + step([(SHRINK, [0, 1], None, 0), (APPEND, [2], None, 0)])
    + fence(wait=True) + seq_stats([0, 1, 2, 3]) + release([0, 1, 2]),
    "step_mixed": O + create(layers=4, heads=4, seqs=4, tokens=512, va=8,
                             dim=3, budget=1)
    + admit([300, 20]) + kernel(0, lists=16) + kernel(1, lists=16)
    + step([(TRIM, [0], None, 0), (APPEND, [0], None, 0),
            (TRIM, [1], None, 0), (APPEND, [0, 1], None, 0)])
    + b"".join(step([(APPEND, [0, 1], None, 0)]) + kernel(0, lists=16) + kernel(1, lists=16)
               for _ in range(20))
    + budget(8) + b"".join(step([(APPEND, [0, 1], None, 0)]) + kernel(0, lists=16)
                           + kernel(1, lists=16) for _ in range(20))
    + step([(EVICT, [1, 0], [(3, 10), (20, 200)], 1)]) + fence(seqno=3)
    + seq_stats([1, 0]) + compact() + release([0]) + stats(),
    "one_tier": O + create(tiers=1, t0=0, dim=4, seqs=4, tokens=64, va=2,
                           budget=1) + admit([64, 64, 64, 64]) + compact()
    + release([3, 2, 1, 0]) + compact(),
}
os.makedirs("tests/fuzz/corpus", exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join("tests/fuzz/corpus", name), "wb") as f:
        f.write(data)
