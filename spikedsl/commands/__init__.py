"""One module per command: ``add_arguments(parser)`` and ``main(args) -> int``.
Heavy imports (torch, brian2, nir) happen inside ``main`` only."""
