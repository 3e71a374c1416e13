"""The entry points and their flags: train (`vma-train`, `python train.py`), eval (`vma-eval`) and
sample (`vma-sample`). Library code elsewhere takes config dataclasses and never reads flags."""
