"""Save the untrained LiT-style oblique dual encoder used as the harness's reference model.

all-MiniLM-L6-v2 (text) + EfficientNet-Lite0 (image) from ``../shared/weights``, joined by
:func:`st_oblique.oblique_dual_encoder` (K=16, d=32); the two oblique heads are random (fixed seed), so zero-shot
scores are near chance: the point is a reproducible model for checking the harness end to end on real data.

    python evaluation/make_untrained_lit.py --weights ../shared/weights --output /tmp/lit-untrained
    st-oblique eval --config evaluation/configs/lit_untrained.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import st_oblique


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=Path("../shared/weights"), help="folder with both backbones")
    parser.add_argument("--output", type=Path, required=True, help="where to save the model (outside the repository)")
    parser.add_argument("--num-tokens", type=int, default=16)
    parser.add_argument("--token-dim", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = st_oblique.oblique_dual_encoder(
        str(args.weights / "all-MiniLM-L6-v2"),
        str(args.weights / "tf_efficientnet_lite0"),
        num_tokens=args.num_tokens,
        token_dim=args.token_dim,
        device="cpu",
    )
    model.save(str(args.output))
    print(
        f"Saved the untrained dual encoder (K={args.num_tokens}, d={args.token_dim}, seed {args.seed}) to {args.output}"
    )
    return args.output


if __name__ == "__main__":
    main()
