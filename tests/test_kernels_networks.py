"""The min/max selection networks behind the median kernels, proved on all zero-one inputs."""

import itertools

import numpy as np

from kernels import _median25, _netgen
from kernels._rows import median9


def _wire_bits(index, n_words):
    """Packed bits of input wire ``index`` over all 2**25 zero-one inputs (bit n = (n >> index) & 1)."""
    if index < 6:
        pattern = 0
        for t in range(64):
            if (t >> index) & 1:
                pattern |= 1 << t
        return np.full(n_words, pattern, np.uint64)
    words = np.arange(n_words, dtype=np.uint64)
    return np.where((words >> np.uint64(index - 6)) & np.uint64(1), ~np.uint64(0), np.uint64(0))


def test_median25_network_is_correct_on_every_zero_one_input():
    """0-1 principle: a min/max network selects the median of any input iff it does on 0/1 inputs."""
    n_inputs, n_words = 25, 2**25 // 64
    ops, result = _netgen.selection_ops(n_inputs, n_inputs // 2)
    last_use = {}
    for position, (_, _, x, y) in enumerate(ops):
        last_use[x] = last_use[y] = position
    values = {f"v{i}": _wire_bits(i, n_words) for i in range(n_inputs)}
    for position, (name, kind, x, y) in enumerate(ops):
        values[name] = (values[x] & values[y]) if kind == "min" else (values[x] | values[y])
        for operand in (x, y):
            if last_use[operand] == position and operand != result:
                del values[operand]
    # expected: bit t of word w is set iff popcount(64 w + t) = popcount(w) + popcount(t) >= 13
    by_word_popcount = np.zeros(n_inputs - 6 + 1, np.uint64)
    for word_count in range(by_word_popcount.size):
        mask = 0
        for t in range(64):
            if word_count + t.bit_count() >= 13:
                mask |= 1 << t
        by_word_popcount[word_count] = mask
    expected = by_word_popcount[np.bitwise_count(np.arange(n_words, dtype=np.uint32))]
    np.testing.assert_array_equal(values[result], expected)


def test_generated_module_is_up_to_date():
    with open(_median25.__file__, encoding="utf-8") as handle:
        assert handle.read() == _netgen.render_module(), "run `python -m kernels._netgen`"


def test_compiled_median25_equals_numpy_median():
    rng = np.random.default_rng(0)
    for values in [rng.normal(size=25), rng.integers(0, 3, 25), np.arange(25)[::-1], np.zeros(25)]:
        values = values.astype(np.float32)
        assert _median25.median25(*values) == np.median(values)


def test_median9_is_correct_on_every_zero_one_input_and_random_values():
    for bits in itertools.product((0, 1), repeat=9):
        assert median9(*bits) == (sum(bits) >= 5)
    rng = np.random.default_rng(1)
    for _ in range(200):
        values = rng.integers(0, 5, 9).astype(np.uint8)
        assert median9(*values) == np.median(values)
