"""Evaluation of trained models on the test split, written once against the model interface.

bounds.py          importance-sampled log-likelihood bounds, streamed over chunks of samples
few_shot.py        few-shot class posteriors from q(a|x) and from importance weights
modes.py           the eval.py modes, each over the papers' deterministic test draws: a JSON-ready result
reports.py         published numbers, Markdown tables and PNG figures
runner.py          one evaluation end to end: restore the run, run a mode, write the reports
progress.py        progress bars on terminals
"""
