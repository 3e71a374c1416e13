"""Evaluation of trained models on the test split, written once against the model interface.

bounds.py          importance-sampled log-likelihood bounds, streamed over chunks of samples
tasks.py           the papers' test protocols as deterministic numpy samplers
classification.py  few-shot class posteriors from q(a|x) and from importance weights
modes.py           the eval.py modes: each returns a JSON-ready result
reports.py         published numbers, Markdown tables and PNG figures
"""
