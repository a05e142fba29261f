"""kwta-robust: adversarial-robustness evaluation for k-Winners-Take-All and sparse-pruned PyTorch models."""

__version__ = "0.1.0"
