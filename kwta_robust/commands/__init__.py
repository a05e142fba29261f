"""Sub-commands of the ``kwta-robust`` CLI, one module each."""
