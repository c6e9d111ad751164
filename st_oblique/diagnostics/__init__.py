"""What an oblique model does with its K tokens: per-token explanations of a score, class-token attention maps and
figures (:mod:`~st_oblique.diagnostics.explanations`), and token-collapse diagnostics
(:mod:`~st_oblique.diagnostics.token_collapse`)."""
