"""Dataset stages that dvc.yaml runs: `python -m stages.<stage>`; library code in subpackages."""
