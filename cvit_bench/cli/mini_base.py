"""``cvit-bench mini-base build|verify``: rebuild the cvit-mini base with the project's recipe, or check one."""
from __future__ import annotations

from pathlib import Path

import click

from ..extras import require


@click.group("mini-base")
def mini_base_group() -> None:
    """The tiny pretrained base of cvit-mini (shipped with the package; rebuild or verify it here)."""


@mini_base_group.command("build")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder to write (must not exist)")
@click.option("--steps", type=int, default=None, help="pretraining steps (default: the recipe's 4000)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--min-accuracy", type=float, default=None,
              help="required held-out exact match, 0–1 (default: the recipe's 0.8; 0 skips the check)")
def build_command(out, steps, seed, min_accuracy) -> None:
    """Pretrain a base from scratch (CPU, about 2 minutes on 2 cores) and print its held-out accuracy."""
    require("hf", "cvit-bench mini-base build")

    import json
    from dataclasses import replace

    from .common import console, stdout
    from .progress import RichProgress
    from ..errors import CvitError
    from ..mini.base_model import REPORT_FILE, MiniRecipe, build_mini_base

    if out.exists() and any(out.iterdir()):
        raise CvitError(f"{out}: exists and is not empty; choose a new folder")
    recipe = MiniRecipe() if min_accuracy is None else replace(MiniRecipe(), min_accuracy=min_accuracy)
    with RichProgress(console()) as progress:
        build_mini_base(out, seed=seed, steps=steps, recipe=recipe, progress=progress)
    report = json.loads((out / REPORT_FILE).read_text())
    acc = report["heldout_accuracy"]
    stdout().print(f"held-out accuracy {acc['overall']:.1%} ("
                 + ", ".join(f"{k} {v:.1%}" for k, v in sorted(acc.items()) if k != "overall")
                 + f"); {report['parameters']:,} parameters; wrote {out}", highlight=False)


@mini_base_group.command("verify")
@click.argument("folder", type=click.Path(path_type=Path), required=False)
def verify_command(folder) -> None:
    """Check every file of a base against its mini_base.json (default: the shipped base)."""
    from .common import stdout
    from ..mini.base_model import SHIPPED_DIR, verify_mini_base

    folder = folder or SHIPPED_DIR
    report = verify_mini_base(folder)
    stdout().print(f"{folder}: {len(report['files'])} files verified; held-out accuracy "
                 f"{report['heldout_accuracy']['overall']:.1%} at build time (seed {report['seed']}, "
                 f"{report['environment'].get('cpu_capability', '?')} kernels)", highlight=False)
