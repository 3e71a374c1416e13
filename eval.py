"""`python eval.py ...`: the same as the `vma-eval` command (vma_tf/cli/eval.py, where its flags are)."""

from vma_tf.cli.eval import run

if __name__ == "__main__":
    run()
