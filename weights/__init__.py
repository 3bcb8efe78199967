"""The model registry (JSON files), installed as ``dgiqa_cli.weights``."""
