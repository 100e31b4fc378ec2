"""``python -m dual_actor.push POLICY_DIR --repo-id me/bolts-policy [--private]``: a trained policy to the Hub.

Uploads ``config.json`` + ``model.safetensors`` with a generated model card: YAML metadata (license,
library_name, tags, ``datasets:``, ``base_model:`` for a SmolVLA backbone), the evaluation table of the run's
``eval.json`` and its resolved ``config.yaml`` (looked for beside the policy folder, i.e. in the run folder,
unless ``--eval`` / ``--config`` say otherwise). The token comes from ``HF_TOKEN`` or ``hf auth login`` and is
never printed. Errors: one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dual_actor.push", description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", type=Path, help="a saved policy folder (e.g. checkpoints/<run>/policy)")
    ap.add_argument("--repo-id", required=True, help="<user or org>/<name> of the model repo")
    ap.add_argument("--private", action="store_true")
    ap.add_argument("--dataset", action="append", default=[], help="dataset repo id(s) the run trained on (card)")
    ap.add_argument("--eval", type=Path, default=None, help="eval.json for the card (default: beside the policy)")
    ap.add_argument("--config", type=Path, default=None, help="the run's config.yaml (default: beside the policy)")
    ap.add_argument("--license", default="apache-2.0")
    args = ap.parse_args(argv)
    from dual_actor.hub import HubError, push_policy

    run = args.policy.resolve().parent
    eval_path = args.eval or run / "eval.json"
    config_path = args.config or run / "config.yaml"
    try:
        for given, path in ((args.eval, eval_path), (args.config, config_path)):
            if given is not None and not path.is_file():
                raise HubError(f"{path}: no such file")
        eval_result = json.loads(eval_path.read_text()) if eval_path.is_file() else None
        train_config = config_path.read_text() if config_path.is_file() else None
        url = push_policy(args.policy, args.repo_id, private=args.private, eval_result=eval_result,
                          train_config=train_config, datasets=args.dataset, license=args.license)
    except (HubError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.policy} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
