"""Generate the median-of-25 selection network used by :mod:`kernels.noise`.

The network is Batcher's odd-even merge sort on 32 wires, with the 7 wires above the 25
inputs held at +inf (comparators touching them become no-ops or renames), pruned backwards
to the operations the middle output (rank 12) depends on. Every kept comparator half is a
single ``min`` or ``max``, so the emitted function is straight-line code that LLVM
vectorises when it is called inside a loop over shifted slices.

Run ``python -m kernels._netgen`` to rewrite ``kernels/_median25.py``;
``tests/test_kernels_networks.py`` checks the file is up to date and proves the network
correct on all 2**25 zero-one inputs (the 0-1 principle).
"""

from pathlib import Path

N_INPUTS = 25
TARGET = Path(__file__).with_name("_median25.py")


def batcher_pairs(n):
    """Comparator pairs (low wire, high wire) of Batcher's odd-even merge sort.

    Parameters
    ----------
    n : int
        Number of wires, a power of two.

    Returns
    -------
    list of tuple of int
        Comparators in execution order; each puts the minimum on the lower wire.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"n must be a power of two, got {n}")
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def selection_ops(n_inputs, rank):
    """Straight-line min/max operations that select the value of a given rank.

    Parameters
    ----------
    n_inputs : int
        Number of inputs, named ``v0`` … ``v{n_inputs-1}``.
    rank : int
        Zero-based rank of the selected value in ascending order.

    Returns
    -------
    ops : list of tuple
        ``(name, "min" | "max", operand, operand)`` in evaluation order.
    result : str
        Name holding the selected value.
    """
    size = 1
    while size < n_inputs:
        size *= 2
    wires = [f"v{i}" for i in range(n_inputs)] + [None] * (size - n_inputs)  # None = +inf
    ops = []
    for low, high in batcher_pairs(size):
        x, y = wires[low], wires[high]
        if y is None:
            continue
        if x is None:
            wires[low], wires[high] = y, None
            continue
        lo_name, hi_name = f"t{len(ops)}", f"t{len(ops) + 1}"
        ops.append((lo_name, "min", x, y))
        ops.append((hi_name, "max", x, y))
        wires[low], wires[high] = lo_name, hi_name
    result = wires[rank]
    live = {result}
    kept = []
    for op in reversed(ops):
        if op[0] in live:
            kept.append(op)
            live.update(op[2:])
    kept.reverse()
    return kept, result


def render_module():
    """Source text of ``kernels/_median25.py``."""
    ops, result = selection_ops(N_INPUTS, N_INPUTS // 2)
    names = [f"v{i}" for i in range(N_INPUTS)]
    arg_lines = [", ".join(names[i:i + 10]) + "," for i in range(0, N_INPUTS, 10)]
    lines = [
        '"""Median of 25 values as a min/max selection network (generated; do not edit).',
        "",
        "Regenerate with ``python -m kernels._netgen``.",
        '"""',
        "",
        "from numba import njit",
        "",
        "",
        "@njit(inline=\"always\")",
        "def median25(",
        *(f"    {line}" for line in arg_lines),
        "):",
        f'    """Median of 25 values ({len(ops)} min/max operations)."""',
    ]
    lines += [f"    {name} = {kind}({x}, {y})" for name, kind, x, y in ops]
    lines.append(f"    return {result}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    TARGET.write_text(render_module())
    print(f"wrote {TARGET}")
