"""`python sample.py ...`: the same as the `vma-sample` command (vma_tf/cli/sample.py, where its flags are)."""

from vma_tf.cli.sample import run

if __name__ == "__main__":
    run()
