"""The literature's kWTA architectures, with the state_dict keys of their released checkpoints.

Factories for ``--model-factory`` (each returns an ``nn.Module`` taking ``[N, C, H, W]`` inputs in [0, 1]):

* ``kwta_robust.zoo:xiao_spresnet18`` — Xiao et al. (ICLR 2020) SparseResNet18 for CIFAR-10, e.g.
  ``--factory-kwargs '{"gamma": 0.1}' --weights kwta_spresnet18_0.1_cifar_adv.pth``;
* ``kwta_robust.zoo:xiao_spcnn`` — Xiao et al.'s SparseMNIST_CNN (``{"sp1": 0.1}``);
* ``kwta_robust.zoo:nupic_sparse_cnn`` — nupic.torch's MNISTSparseCNN (Ahmad & Scheinkman 2019);
* ``kwta_robust.zoo:nupic_gsc_sparse_cnn`` — nupic.torch's GSCSparseCNN (``gsc_sparse_cnn-7bc3782d.pth``).

The same networks are registered in the model registry (activation injected) as ``xiao-spresnet18``,
``xiao-spcnn``, ``nupic-sparse-cnn`` and ``nupic-gsc-sparse-cnn``. Each module's docstring says what was
reproduced and how the released weights expect their inputs. Weights files from other code bases are unwrapped
and normalized on loading by :mod:`kwta_robust.foreign_weights`.
"""

from kwta_robust.zoo.nupic import nupic_gsc_sparse_cnn, nupic_sparse_cnn
from kwta_robust.zoo.xiao import XiaoKWTA, XiaoKWTA2d, xiao_spcnn, xiao_spresnet18

__all__ = ["xiao_spresnet18", "xiao_spcnn", "nupic_sparse_cnn", "nupic_gsc_sparse_cnn", "XiaoKWTA", "XiaoKWTA2d"]
