"""``python -m sere_core.benchmark``: the same command as ``sere benchmark``."""

from sere_core.cli.method import benchmark

if __name__ == "__main__":
    benchmark(prog_name="python -m sere_core.benchmark")
