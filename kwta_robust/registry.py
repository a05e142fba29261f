"""The one generic plug-in registry of the package (re-exported from :mod:`attacks.registry`, the layer below, so
that attacks, noise probes and surrogates use the same class without ``attacks`` importing ``kwta_robust``).

Registries built on it: attacks (:data:`attacks.base.REGISTRY`), noise probes (:data:`attacks.noise.NOISE_PROBES`),
BPDA surrogates (:data:`attacks.bpda.SURROGATES`), architectures (:data:`kwta_robust.models.registry.REGISTRY`),
data sets (:data:`kwta_robust.data.REGISTRY`), diagnostics (:data:`kwta_robust.diagnostics.CHECKS`), pruning
methods (:data:`kwta_robust.sparsity.config.METHODS`), table formats (:data:`kwta_robust.formats.FORMATS`) and
sweep executors (:data:`kwta_robust.sweep.executors.EXECUTORS`). Each has ``register`` (a decorator), ``get``,
``info``, ``names`` and raises one error type, :class:`RegistryError`; each loads another distribution's plug-ins
from its entry point group (:data:`kwta_robust.plugins.KINDS` lists them; ``kwta-robust plugins`` shows them).
"""

from attacks.registry import Entry, PluginOrigin, Registry, first_doc_line
from kwta_robust.errors import RegistryError

__all__ = ["Entry", "PluginOrigin", "Registry", "RegistryError", "first_doc_line"]
