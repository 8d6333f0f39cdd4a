"""SERE Studio: few-shot, cross-lingual speech emotion recognition (SERE, arXiv 2604.07417).

The package is a pipeline, one sub-package per stage: ``audio`` -> ``manifests`` -> ``encoders``
-> ``cache``/``features`` -> ``method`` and ``baselines`` -> ``benchmark`` -> ``storage`` ->
``viz`` -> ``app``; ``cli`` reaches the same functions from a terminal.
"""

__version__ = "0.1.0"
