"""``python -m dual_actor.eval``: :func:`dual_actor.eval.cli.main`."""

from dual_actor.eval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
