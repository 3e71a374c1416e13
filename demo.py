"""`python demo.py ...`: the same as the `vma-demo` command (vma_tf/cli/demo.py, where its flags are)."""

from vma_tf.cli.demo import run

if __name__ == "__main__":
    run()
