"""The local worker pool: results in order, and a clear error when workers cannot start."""

import subprocess
import sys
import textwrap

from pipeline.features.executor import WorkerPool, batched, map_batches


def square_all(batch):
    return [x * x for x in batch]


def test_results_come_back_in_batch_order_with_and_without_processes():
    batches = batched(list(range(23)), 4)
    expected = [[x * x for x in b] for b in batches]
    assert map_batches(square_all, batches, workers=1, progress=False) == expected
    with WorkerPool(2) as pool:
        assert map_batches(square_all, batches, pool=pool, progress=False) == expected


def test_unguarded_script_gets_an_error_that_says_what_to_do(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        from pipeline.features.executor import map_batches

        def double(batch):
            return [2 * x for x in batch]

        map_batches(double, [[1], [2], [3]], workers=2, progress=False)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr
