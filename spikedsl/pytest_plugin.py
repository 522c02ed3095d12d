"""pytest plugin: collects ``test`` blocks of ``*.spk`` files (work in progress)."""
