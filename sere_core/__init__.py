"""SERE Studio: few-shot, cross-lingual speech emotion recognition (SERE, arXiv 2604.07417).

The package is a pipeline, one sub-package per stage: ``audio`` -> ``manifests`` -> ``encoders``
-> ``cache``/``features`` -> ``method`` and ``baselines`` -> ``benchmark`` -> ``storage`` ->
``viz`` -> ``app``; ``cli`` reaches the same functions from a terminal.
"""

__version__ = "0.1.0"


def _keep_torch_caches_out_of_tmp() -> None:
    """Importing transformers' models imports ``torch._dynamo``, which creates a compiler cache
    folder, ``$TMPDIR/torchinductor_<user>``, that outlives every run although SERE compiles
    nothing; it goes into SERE's own cache folder instead (an explicit setting still wins)."""
    import os

    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        from sere_core.cache import default_cache_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(default_cache_dir() / "torch-inductor")


_keep_torch_caches_out_of_tmp()
