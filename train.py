"""`python train.py ...`: the same as the `vma-train` command (vma_tf/cli/train.py, where its flags are)."""

from vma_tf.cli.train import run

if __name__ == "__main__":
    run()
